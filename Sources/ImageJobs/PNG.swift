import CZlib

/// Encodes RGB images as PNG: signature, IHDR, one IDAT (zlib's deflate) and IEND, with
/// zlib's CRC-32 on every chunk.
public enum PNG {
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Encodes 8-bit RGB pixels (`width * height * 3` bytes, rows top to bottom).
    public static func encodeRGB(width: Int, height: Int, pixels: [UInt8]) throws -> [UInt8] {
        precondition(pixels.count == width * height * 3, "pixel buffer does not match the size")
        // Each scanline starts with its filter type; "Sub" (1) compresses smooth images well.
        let stride = width * 3
        var raw = [UInt8](repeating: 0, count: (stride + 1) * height)
        for y in 0..<height {
            let row = y * (stride + 1)
            raw[row] = 1
            let src = y * stride
            for x in 0..<stride {
                let left: UInt8 = x >= 3 ? pixels[src + x - 3] : 0
                raw[row + 1 + x] = pixels[src + x] &- left
            }
        }
        var out = signature
        var ihdr: [UInt8] = []
        ihdr += be32(UInt32(width)) + be32(UInt32(height))
        ihdr += [8, 2, 0, 0, 0]  // 8-bit depth, truecolour, deflate, adaptive filtering, no interlace
        out += chunk("IHDR", ihdr)
        out += chunk("IDAT", try deflate(raw))
        out += chunk("IEND", [])
        return out
    }

    static func deflate(_ data: [UInt8]) throws -> [UInt8] {
        var destLength = compressBound(uLong(data.count))
        var dest = [UInt8](repeating: 0, count: Int(destLength))
        let status = data.withUnsafeBufferPointer { src in
            dest.withUnsafeMutableBufferPointer { dst in
                compress2(dst.baseAddress, &destLength, src.baseAddress, uLong(data.count), 6)
            }
        }
        guard status == Z_OK else { throw ImageGenerationError.permanent("zlib could not compress the image (status \(status))") }
        return Array(dest.prefix(Int(destLength)))
    }

    /// Inflates a zlib stream whose inflated size is known.
    public static func inflate(_ data: [UInt8], expectedSize: Int) -> [UInt8]? {
        var destLength = uLong(expectedSize)
        var dest = [UInt8](repeating: 0, count: max(expectedSize, 1))
        let status = data.withUnsafeBufferPointer { src in
            dest.withUnsafeMutableBufferPointer { dst in
                uncompress(dst.baseAddress, &destLength, src.baseAddress, uLong(data.count))
            }
        }
        guard status == Z_OK, Int(destLength) == expectedSize else { return nil }
        return dest
    }

    public static func crc32(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { UInt32(CZlib.crc32(0, $0.baseAddress, uInt($0.count))) }
    }

    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typeBytes = Array(type.utf8)
        return be32(UInt32(data.count)) + typeBytes + data + be32(crc32(typeBytes + data))
    }

    static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)]
    }

    /// What a PNG's IHDR says, after checking the signature and every chunk's CRC.
    public struct Info: Sendable, Equatable {
        public var width: Int
        public var height: Int
        public var bitDepth: Int
        public var colorType: Int
        /// The concatenated IDAT data, inflated.
        public var inflatedSize: Int?
    }

    /// Parses and checks a PNG; `nil` when it is not a valid one.
    public static func inspect(_ png: [UInt8]) -> Info? {
        guard png.count > 8, Array(png.prefix(8)) == signature else { return nil }
        var i = 8
        var info: Info?
        var idat: [UInt8] = []
        var sawEnd = false
        func u32(_ at: Int) -> Int { Int(png[at]) << 24 | Int(png[at + 1]) << 16 | Int(png[at + 2]) << 8 | Int(png[at + 3]) }
        while i + 12 <= png.count {
            let length = u32(i)
            guard i + 12 + length <= png.count else { return nil }
            let type = Array(png[(i + 4)..<(i + 8)])
            let data = Array(png[(i + 8)..<(i + 8 + length)])
            guard UInt32(u32(i + 8 + length)) == crc32(type + data) else { return nil }
            switch String(decoding: type, as: UTF8.self) {
            case "IHDR":
                guard length == 13 else { return nil }
                info = Info(width: Int(data[0]) << 24 | Int(data[1]) << 16 | Int(data[2]) << 8 | Int(data[3]),
                            height: Int(data[4]) << 24 | Int(data[5]) << 16 | Int(data[6]) << 8 | Int(data[7]),
                            bitDepth: Int(data[8]), colorType: Int(data[9]), inflatedSize: nil)
            case "IDAT": idat += data
            case "IEND": sawEnd = true
            default: break
            }
            i += 12 + length
        }
        guard sawEnd, var result = info else { return nil }
        let channels = result.colorType == 2 ? 3 : result.colorType == 6 ? 4 : result.colorType == 0 ? 1 : 3
        let expected = (result.width * channels * result.bitDepth / 8 + 1) * result.height
        result.inflatedSize = inflate(idat, expectedSize: expected)?.count
        return result
    }
}
