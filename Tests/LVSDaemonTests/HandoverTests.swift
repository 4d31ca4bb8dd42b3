import LVSCore
import LVSPacket
import LVSTestSupport
import Logging
import Testing

@testable import LVSConfiguration
@testable import LVSControlProtocol
@testable import LVSDaemon

/// What a handover carries besides the connections: the counters and their
/// rate estimators, and the passive check's verdicts, go on in the
/// successor as if nothing had happened.
@Suite struct HandoverTests {
    static func plane() throws -> ControlPlane {
        let p = ControlPlane(capacity: 64, workers: 2, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let rules = """
            -A -t 198.18.0.10:80 -s rr
            -a -t 198.18.0.10:80 -r 198.19.0.2:8080 -m
            -a -t 198.18.0.10:80 -r 198.19.0.3:8080 -m
            """
        try p.apply(try RulesFile.parse(rules, file: "test").flatMap(\.operations))
        return p
    }

    @Test func countersAndRatesGoOnInTheSuccessor() throws {
        let key = ServiceKey.address(.tcp, ip("198.18.0.10"), 80)
        let old = try Self.plane()
        var traffic = Counters()
        traffic.connections = 600
        traffic.inPackets = 6000
        traffic.inBytes = 600_000
        // Two estimator periods of traffic on the old director's second worker.
        for t in [2000, 4000] as [UInt64] {
            old.engines[1].director.withLock { d in
                d.carry(traffic, service: nil)
                d.carry(traffic, service: key)
                d.carry(traffic, service: key, server: (ip("198.19.0.3"), 8080))
            }
            old.tick(now: t)
        }
        let new = try Self.plane()
        new.carry(old.carriedCounters())
        let before = old.snapshot(connections: false)
        let after = new.snapshot(connections: false)
        #expect(after.services[0].stats == before.services[0].stats && after.services[0].stats.connections == 1200)
        #expect(after.services[0].servers[1].stats.connections == 1200 && after.services[0].servers[0].stats.connections == 0)
        #expect(after.services[0].rates == before.services[0].rates && after.services[0].rates.connectionsPerSecond > 0)
        #expect(new.carriedCounters()[0] == old.carriedCounters()[0])
        // The next period: no traffic, no spike from the carried counts.
        new.tick(now: 6000)
        #expect(new.snapshot(connections: false).services[0].rates.connectionsPerSecond < before.services[0].rates.connectionsPerSecond)
    }

    /// A server the passive check gave weight 0 keeps it in the successor
    /// until its time is up, then has its weight back on probation; one
    /// the successor's rules no longer have is left out.
    @Test func thePassiveCheckGoesOnInTheSuccessor() throws {
        let key = ServiceKey.address(.tcp, ip("198.18.0.10"), 80)
        let now: UInt64 = 1_000_000
        let held = CarriedPassiveRecord(service: key, address: ip("198.19.0.3"), port: 8080, weight: 1, until: now + 5000, inhibit: 10_000, since: now - 1000)
        var gone = held
        gone.address = ip("198.19.0.9")
        let new = try Self.plane()
        new.carry(passive: [held, gone])
        #expect(new.carriedPassive() == [held])
        func weights() -> [Int32] { new.snapshot(connections: false).services[0].servers.map(\.server.weight) }
        #expect(weights() == [1, 0])
        new.tick(now: now + 4999)
        #expect(weights() == [1, 0])
        new.tick(now: now + 5000)
        #expect(weights() == [1, 1] && new.carriedPassive().first?.until == nil && new.carriedPassive().first?.inhibit == 10_000)
    }
}
