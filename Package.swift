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
        // The image product, and the engine it is built on, each with the layers below it.
        .library(name: "ImageJobs", targets: ["ImageJobs", "JobEngine", "Postgres"]),
        .library(name: "JobEngine", targets: ["JobEngine", "Postgres"]),
        .executable(name: "imagejobs", targets: ["imagejobs"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
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
        // The libpq wrapper: connections, bound parameters, typed rows, errors, pool, LISTEN.
        .target(
            name: "Postgres",
            dependencies: [
                "CLibPQ",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        // The generic job engine: jobs, kinds, priorities, batches, attempts, results, workers.
        .target(
            name: "JobEngine",
            dependencies: [
                "Postgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: settings
        ),
        // The image product on the engine: image parameters, generators, PNGs.
        .target(
            name: "ImageJobs",
            dependencies: [
                "JobEngine",
                "CZlib",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ],
            swiftSettings: settings
        ),
        // The HTTP API on the image product: routes, API keys, errors as JSON.
        .target(
            name: "ImageJobsServer",
            dependencies: [
                "Postgres",
                "JobEngine",
                "ImageJobs",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: settings
        ),
        // The `imagejobs` command line: migrate, submit, worker, serve, report, bench, ….
        .target(
            name: "ImageJobsCLI",
            dependencies: [
                "Postgres",
                "JobEngine",
                "ImageJobs",
                "ImageJobsServer",
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
            name: "imagejobs-drill-worker",
            dependencies: ["ImageJobsCLI", "JobEngine", "Postgres", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Tests/DrillWorker",
            swiftSettings: settings
        ),
        .executableTarget(
            name: "imagejobs-chaos",
            dependencies: ["Postgres", "JobEngine", "TestSupport"],
            path: "Tests/Chaos",
            swiftSettings: settings
        ),
        .target(
            name: "TestSupport",
            dependencies: ["Postgres", "JobEngine", .product(name: "Logging", package: "swift-log")],
            path: "Tests/TestSupport",
            swiftSettings: settings
        ),
        .testTarget(name: "PostgresTests", dependencies: ["Postgres", "TestSupport"], swiftSettings: settings),
        .testTarget(
            name: "JobEngineTests",
            dependencies: ["JobEngine", "TestSupport", .product(name: "InMemoryTracing", package: "swift-distributed-tracing")],
            swiftSettings: settings
        ),
        .testTarget(
            name: "ImageJobsTests",
            dependencies: ["ImageJobs", "JobEngine", "TestSupport"],
            swiftSettings: settings
        ),
        .testTarget(
            name: "ImageJobsServerTests",
            dependencies: [
                "ImageJobsServer", "ImageJobs", "JobEngine", "TestSupport", .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: settings
        ),
        .testTarget(
            name: "ImageJobsCLITests",
            dependencies: ["ImageJobsCLI", "JobEngine", "TestSupport"],
            swiftSettings: settings
        ),
    ],
    swiftLanguageModes: [.v6]
)
