// swift-tools-version:6.0
import PackageDescription

// C kernels: always optimised (debug builds would otherwise run the real model 10-50x slower),
// OpenMP on Linux via the system libomp (the toolchain's clang finds no omp.h; see Kernels/include).
let kernelFlags: [CSetting] = [
    .unsafeFlags(["-O3", "-std=gnu11", "-fno-math-errno"]),
    .unsafeFlags(["-fopenmp"], .when(platforms: [.linux])),
]

let package = Package(
    name: "qlm",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "qlm", targets: ["qlm"]),
        .library(name: "QLM", targets: ["QLM"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "QLMKernels",
            path: "Kernels",
            cSettings: kernelFlags,
            linkerSettings: [
                .linkedLibrary("openblas", .when(platforms: [.linux])),
                .linkedLibrary(":libomp.so.5", .when(platforms: [.linux])),
                .linkedFramework("Accelerate", .when(platforms: [.macOS])),
            ]
        ),
        .target(
            name: "QLM",
            dependencies: ["QLMKernels"],
            path: "Sources/QLM",
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "qlm",
            dependencies: ["QLM", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/qlm"
        ),
        .testTarget(
            name: "QLMTests",
            dependencies: ["QLM", "QLMKernels"],
            path: "Tests/QLMTests"
        ),
    ],
    // Swift 5 mode: the engine shares immutable weights across threads through raw pointers,
    // which strict-concurrency checking cannot express without noise.
    swiftLanguageModes: [.v5]
)
