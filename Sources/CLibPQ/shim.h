// The libpq client API. pkg-config "libpq" supplies the include path; nothing is hard-coded here.
#include <libpq-fe.h>
