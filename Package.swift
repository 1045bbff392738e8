// swift-tools-version: 6.1
import PackageDescription

/// Settings every target shares: Swift 6 language mode is set package-wide below; these add the
/// upcoming features that make existential use and imports explicit.
let settings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "ImageJobs",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "ImageJobs", targets: ["Postgres", "JobQueue", "ImageGeneration"]),
        .executable(name: "imagejobs", targets: ["imagejobs"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"]), .brew(["libpq"])]
        ),
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]
        ),
        .target(
            name: "Postgres",
            dependencies: [
                "CLibPQ",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        .target(
            name: "JobQueue",
            dependencies: [
                "Postgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: settings
        ),
        .target(
            name: "ImageGeneration",
            dependencies: [
                "JobQueue",
                "CZlib",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ],
            swiftSettings: settings
        ),
        .target(
            name: "ImageJobsCLI",
            dependencies: [
                "Postgres",
                "JobQueue",
                "ImageGeneration",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "imagejobs",
            dependencies: ["ImageJobsCLI"],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "imagejobs-chaos",
            dependencies: ["Postgres", "JobQueue"],
            path: "Tests/Chaos",
            swiftSettings: settings
        ),
        .target(
            name: "TestSupport",
            dependencies: ["Postgres", "JobQueue", .product(name: "Logging", package: "swift-log")],
            path: "Tests/TestSupport",
            swiftSettings: settings
        ),
        .testTarget(name: "PostgresTests", dependencies: ["Postgres", "TestSupport"], swiftSettings: settings),
        .testTarget(name: "JobQueueTests", dependencies: ["JobQueue", "TestSupport"], swiftSettings: settings),
        .testTarget(
            name: "ImageGenerationTests",
            dependencies: ["ImageGeneration", "JobQueue", "TestSupport"],
            swiftSettings: settings
        ),
        .testTarget(
            name: "ImageJobsCLITests",
            dependencies: ["ImageJobsCLI", "JobQueue", "TestSupport"],
            swiftSettings: settings
        ),
    ],
    swiftLanguageModes: [.v6]
)
