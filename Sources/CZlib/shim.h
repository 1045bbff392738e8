// zlib from the system (deflate for PNG IDAT, crc32 for chunk checksums).
#include <zlib.h>
