// swift-tools-version: 6.1
// A chat backend that adopts ImageJobs' engine: a typed job enqueued in the app's own
// transaction with a row of its own, and a worker with a custom handler.
import PackageDescription

let package = Package(
    name: "ChatBackend",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "ImageJobs", path: "../.."),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "ChatBackend",
            dependencies: [
                .product(name: "JobEngine", package: "ImageJobs"),
                .product(name: "Logging", package: "swift-log"),
            ]
        )
    ],
    swiftLanguageModes: [.v6]
)
