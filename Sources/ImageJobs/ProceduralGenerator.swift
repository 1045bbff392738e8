import Foundation
import JobEngine

/// The offline default: draws a deterministic picture from the prompt and seed.
///
/// The same prompt, seed and size render the same bytes; different prompts pick different
/// palettes, shapes and waves, so they look visibly different. Rendering runs on a thread of its
/// own (it is CPU work), never on the cooperative pool, and stops early when cancelled.
public struct ProceduralGenerator: ImageGenerator {
    public let name = "procedural"

    public init() {}

    public func generate(_ request: ImageRequest) async throws -> GeneratedImage {
        try await generate(request) { _, _ in }
    }

    /// Reports the rows drawn, every 32 rows.
    public func generate(_ request: ImageRequest, progress: @escaping @Sendable (_ step: Int, _ total: Int) -> Void) async throws -> GeneratedImage {
        let p = request.parameters
        let flag = CancelFlag()
        let pixels: [UInt8]? = await withTaskCancellationHandler {
            await runBlocking(name: "procedural") {
                Self.render(prompt: p.prompt, seed: p.seed ?? 0, width: p.width, height: p.height, cancelled: flag) { rows in
                    progress(rows, p.height)
                }
            }
        } onCancel: {
            flag.set()
        }
        guard let pixels else { throw CancellationError() }
        let png = try PNG.encodeRGB(width: p.width, height: p.height, pixels: pixels)
        return GeneratedImage(
            png: png, width: p.width, height: p.height, backend: name,
            metadata: ["seed": "\(p.seed ?? 0)", "renderer": "procedural-v1"])
    }

    /// Renders RGB pixels; `nil` when cancelled part-way.
    static func render(
        prompt: String, seed: Int64, width: Int, height: Int, cancelled: CancelFlag, rowsDone: (Int) -> Void = { _ in }
    ) -> [UInt8]? {
        var digest = SHA256.digest(Array("\(seed):\(prompt)".utf8))
        digest += SHA256.digest(digest)
        var cursor = 0
        func next() -> Double {
            let v = Double(digest[cursor % digest.count]) / 255
            cursor += 1
            return v
        }
        func colour() -> (Double, Double, Double) { (next() * 255, next() * 255, next() * 255) }
        let top = colour(), bottom = colour()
        struct Blob { var x, y, r2, cr, cg, cb, strength: Double }
        let blobCount = 3 + Int(next() * 5)
        let scale = Double(min(width, height))
        var blobs: [Blob] = []
        for _ in 0..<blobCount {
            let c = colour()
            let r = (0.08 + next() * 0.25) * scale
            blobs.append(Blob(x: next() * Double(width), y: next() * Double(height), r2: r * r, cr: c.0, cg: c.1, cb: c.2, strength: 0.5 + next() * 0.5))
        }
        let waveFreq = (2 + next() * 10) * 2 * Double.pi / scale
        let waveAmp = 10 + next() * 30
        let waveAngle = next() * Double.pi
        let (wx, wy) = (cos(waveAngle) * waveFreq, sin(waveAngle) * waveFreq)

        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        let ok = pixels.withUnsafeMutableBufferPointer { out -> Bool in
            for y in 0..<height {
                if y % 32 == 0 {
                    if cancelled.isSet { return false }
                    rowsDone(y)
                }
                let t = Double(y) / Double(max(height - 1, 1))
                let baseR = top.0 + (bottom.0 - top.0) * t
                let baseG = top.1 + (bottom.1 - top.1) * t
                let baseB = top.2 + (bottom.2 - top.2) * t
                for x in 0..<width {
                    var r = baseR, g = baseG, b = baseB
                    let fx = Double(x), fy = Double(y)
                    for blob in blobs {
                        let dx = fx - blob.x, dy = fy - blob.y
                        let d2 = dx * dx + dy * dy
                        if d2 < blob.r2 {
                            let w = (1 - d2 / blob.r2) * blob.strength
                            r += (blob.cr - r) * w
                            g += (blob.cg - g) * w
                            b += (blob.cb - b) * w
                        }
                    }
                    let wave = sin(fx * wx + fy * wy) * waveAmp
                    let i = (y * width + x) * 3
                    out[i] = UInt8(clamping: Int(r + wave))
                    out[i + 1] = UInt8(clamping: Int(g + wave * 0.5))
                    out[i + 2] = UInt8(clamping: Int(b - wave * 0.5))
                }
            }
            rowsDone(height)
            return true
        }
        return ok ? pixels : nil
    }
}

/// A flag set from a cancellation handler and read by a rendering thread.
final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}
