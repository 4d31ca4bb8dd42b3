import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSLinux
import LVSPacket
import LVSSystem

/// The passive check's decisions, as DPVS's dest-check makes them: a real
/// server reported as not answering SYNs gets weight 0 for a while (5 s,
/// doubling on each relapse up to an hour), then its weight back on
/// probation; its first SYN-ACK ends the probation and the back-off.
struct PassiveHealth {
    static let minimumInhibit: UInt64 = 5_000
    static let maximumInhibit: UInt64 = 3_600_000

    struct Key: Hashable {
        var service: ServiceKey
        var address: IPAddress
        var port: UInt16
    }

    struct Record {
        /// The weight it had before; restored on probation.
        var weight: Int32
        /// While inhibited: when it ends; nil on probation.
        var until: UInt64?
        var inhibit: UInt64
        var since: UInt64
    }

    var enabled = true
    var records: [Key: Record] = [:]

    /// Health listing rows for the servers it holds.
    func entries(now: UInt64) -> [HealthEntry] {
        records.sorted { "\($0.key.service)\($0.key.address)" < "\($1.key.service)\($1.key.address)" }.map { k, r in
            let detail =
                r.until.map { "no SYN-ACK to \(Director.synsBeforeSuspect) SYNs: weight 0 for \(($0 &- now + 999) / 1000) s more" }
                ?? "on probation: weight \(r.weight) back, waiting for a SYN-ACK"
            return HealthEntry(
                service: k.service, address: k.address, port: k.port, up: r.until == nil, checks: ["passive"],
                since: (now &- r.since) / 1000, detail: detail)
        }
    }
}

extension ControlPlane {
    /// Turns the passive check on or off (lvsd's `--no-passive-check`).
    public func setPassiveCheck(_ on: Bool) {
        state.withLock { s in
            s.passive.enabled = on
            if !on { s.passive.records = [:] }
        }
        for e in engines { e.director.withLock { $0.passiveCheck = on } }
    }

    /// The servers the passive check holds, for a successor (a handover).
    public func carriedPassive() -> [CarriedPassiveRecord] {
        state.withLock { s in
            s.passive.records.map { k, r in
                CarriedPassiveRecord(
                    service: k.service, address: k.address, port: k.port, weight: r.weight, until: r.until, inhibit: r.inhibit, since: r.since)
            }
        }
    }

    /// A predecessor's passive check goes on here: its inhibited servers
    /// keep weight 0 until their time is up, its probations wait for a
    /// SYN-ACK, a relapse doubles the same back-off. Servers the rules no
    /// longer have are left out.
    public func carry(passive: [CarriedPassiveRecord]) {
        state.withLock { s in
            guard s.passive.enabled else { return }
            var changed = false
            for r in passive {
                guard s.table.service(r.service)?.realServers.contains(where: { $0.address == r.address && $0.port == r.port }) == true else { continue }
                let key = PassiveHealth.Key(service: r.service, address: r.address, port: r.port)
                s.passive.records[key] = PassiveHealth.Record(weight: r.weight, until: r.until, inhibit: r.inhibit, since: r.since)
                if r.until != nil { changed = setWeight(&s, key, 0) || changed }
                for e in engines { e.director.withLock { $0.setSuspect(r.service, address: r.address, port: r.port, true) } }
            }
            if changed { configureEngines(&s) }
        }
    }

    /// Part of every tick: what the engines saw, and probations that begin.
    func runPassiveCheck(_ s: inout State, now: UInt64) {
        var events: [PassiveEvent] = []
        for e in engines { e.director.withLock { $0.takePassiveEvents { events.append($0) } } }
        guard s.passive.enabled else { return }
        var changed = false
        for ev in events {
            let key = PassiveHealth.Key(service: ev.service, address: ev.address, port: ev.port)
            switch ev.kind {
            case .answered:
                guard let r = s.passive.records.removeValue(forKey: key) else { continue }
                if r.until != nil { changed = setWeight(&s, key, r.weight) || changed }
                for e in engines { e.director.withLock { $0.setSuspect(ev.service, address: ev.address, port: ev.port, false) } }
                logger.notice("real server answers SYNs again", metadata: ["server": "\(ev.address):\(ev.port)", "service": "\(ev.service)"])
            case .unanswered:
                guard s.passive.records[key]?.until == nil,
                    let server = s.table.service(ev.service)?.realServers.first(where: { $0.address == ev.address && $0.port == ev.port })
                else { continue }
                let previous = s.passive.records[key]
                let inhibit = previous.map { min($0.inhibit * 2, PassiveHealth.maximumInhibit) } ?? PassiveHealth.minimumInhibit
                let weight = previous?.weight ?? server.weight
                guard weight > 0 else { continue }
                s.passive.records[key] = PassiveHealth.Record(weight: weight, until: now &+ inhibit, inhibit: inhibit, since: now)
                changed = setWeight(&s, key, 0) || changed
                for e in engines { e.director.withLock { $0.setSuspect(ev.service, address: ev.address, port: ev.port, true) } }
                logger.warning(
                    "real server does not answer SYNs: weight 0",
                    metadata: [
                        "server": "\(ev.address):\(ev.port)", "service": "\(ev.service)",
                        "seconds": "\(inhibit / 1000)",
                    ])
            }
        }
        for (key, r) in s.passive.records {
            guard let until = r.until, until <= now else { continue }
            s.passive.records[key]?.until = nil
            s.passive.records[key]?.since = now
            changed = setWeight(&s, key, r.weight) || changed
        }
        if changed { configureEngines(&s) }
    }

    /// Sets a server's weight in the table, unless a health checker holds it
    /// down or it is gone; whether anything changed.
    func setWeight(_ s: inout State, _ key: PassiveHealth.Key, _ weight: Int32) -> Bool {
        guard var server = s.table.service(key.service)?.realServers.first(where: { $0.address == key.address && $0.port == key.port }),
            server.weight != weight
        else { return false }
        if weight > 0, s.health.values.contains(where: { !$0.up && $0.target.server.address == key.address && $0.target.server.port == key.port }) {
            return false
        }
        server.weight = weight
        do { try s.table.apply(.editServer(key.service, server)) } catch { return false }
        return true
    }
}
