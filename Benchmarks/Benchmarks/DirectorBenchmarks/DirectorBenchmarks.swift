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
                if kind.makesConnections && i % 512 == 0 { s.reset() }
                if i % 32 == 0 { s.runBatch(offset: i) }
            }
        }
    }
    bench("NAT established, 1M flows", .natEstablished, flows: 1_000_000)
    bench("New connection, wlc", .newConnectionWLC, flows: 4096)
    bench("NAT reply of another director's connection", .natReplyTaken, flows: 4096)
    bench("DR established", .directRouting, flows: 1024)
    bench("TUN encapsulation", .tunnel, flows: 1024)
    bench("FULLNAT with TOA insertion", .fullNATWithTOA, flows: 1024)
    bench("FULLNAT established", .fullNATEstablished, flows: 1024)
    bench("FULLNAT established, PROXY header's shift", .fullNATProxyShift, flows: 1024)
    // Target: 2 ms (the Maglev paper's 1.8 ms for the same size).
    Benchmark("Maglev rebuild, M = 65537, 1000 servers", configuration: .init(metrics: [.wallClock], maxIterations: 200)) { benchmark in
        var m = MaglevRebuild(servers: 1000, tableSize: 65537)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { m.rebuild() }
    }
    // Target: 1 GiB for 10M (scripts/bench-instructions memory prints the exact figure).
    Benchmark("1M IPv4 connections, resident memory", configuration: .init(metrics: [.peakMemoryResident], maxIterations: 3)) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(FullTable(connections: 1_000_000).footprint) }
    }
}
