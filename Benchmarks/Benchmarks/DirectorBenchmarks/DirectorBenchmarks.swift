import Benchmark
import DirectorFixtures

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .mallocCountTotal, .throughput], maxDuration: .seconds(2), maxIterations: 100_000)

    func bench(_ name: String, _ kind: Scenario.Kind, flows: Int) {
        Benchmark(name, configuration: .init(scalingFactor: .kilo)) { benchmark in
            let s = Scenario(kind, flows: flows)
            benchmark.startMeasurement()
            // 32 batches of 32 frames = 1024 packets per scaled iteration.
            for i in benchmark.scaledIterations {
                if kind == .newConnectionWLC && i % 512 == 0 { s.reset() }
                if i % 32 == 0 { s.runBatch(offset: i) }
            }
        }
    }
    bench("NAT established, 1M flows", .natEstablished, flows: 1_000_000)
    bench("New connection, wlc", .newConnectionWLC, flows: 4096)
    bench("DR established", .directRouting, flows: 1024)
    bench("TUN encapsulation", .tunnel, flows: 1024)
    bench("FULLNAT with TOA insertion", .fullNATWithTOA, flows: 1024)
}
