import LVSConfiguration
import LVSDaemon
import LVSPacket
import LVSSystem
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// keepalived's checkers, run by lvsd: each checked real server on its own
/// schedule (`delay_loop`), at most `concurrency` checks at a time, as tasks
/// whose sockets are SwiftNIO channels on the daemon's event loops (never the
/// data plane's threads). Verdicts go to the control plane, which takes a
/// failed server out of its services or sets its weight to 0
/// (`inhibit_on_failure`), and puts it back when it passes again.
public final class HealthMonitor: Sendable {
    let plane: ControlPlane
    public let targets: [HealthTarget]
    let group: any EventLoopGroup
    let logger: Logger
    let slots: CheckSlots
    /// Each server's last verdict: for notify_up / notify_down, for retries,
    /// and for the monitor that replaces this one on a reload.
    let last = Mutex<[String: Verdict]>([:])

    public init(plane: ControlPlane, targets: [HealthTarget], group: any EventLoopGroup, logger: Logger, concurrency: Int = 16) {
        self.plane = plane
        self.targets = targets
        self.group = group
        self.logger = logger
        slots = CheckSlots(concurrency)
    }

    /// Runs every checker until the task is cancelled. A server `previous`
    /// (the monitor this one replaces on a reload) found down stays down
    /// until a check passes, so that a reload never puts a failed server
    /// back into rotation; so does one `inherited` down from the lvsd this one took over from.
    public func run(after previous: HealthMonitor? = nil, inherited: [String: Verdict] = [:]) async {
        let before = previous?.last.withLock { $0 } ?? inherited
        for t in targets {
            if let v = before[t.id] {
                last.withLock { $0[t.id] = v }
                if !v.up { plane.healthChanged(t, up: false, detail: v.detail) }
            } else if t.startsDown {
                report(t, Verdict(up: false, detail: "alpha: down until a check passes"))
            }
        }
        if !targets.isEmpty { logger.info("health checks running", metadata: ["servers": "\(targets.count)"]) }
        await withTaskGroup(of: Void.self) { checks in
            for t in targets { checks.addTask { await self.check(t) } }
        }
    }

    /// One server's checks, `delay_loop` apart, from a random moment within `warmup`.
    func check(_ t: HealthTarget) async {
        let warmup = t.checks.map(\.warmup).max() ?? 0
        if warmup > 0 { try? await Task.sleep(for: .seconds(Double.random(in: 0...warmup))) }
        while !Task.isCancelled {
            await slots.acquire()
            let verdict = await Self.check(t, wasUp: last.withLock { $0[t.id]?.up }, group: group)
            await slots.release()
            guard !Task.isCancelled else { return }
            report(t, verdict)
            try? await Task.sleep(for: .seconds(t.checks.map(\.delayLoop).min() ?? 60))
        }
    }

    func report(_ t: HealthTarget, _ v: Verdict) {
        plane.healthChanged(t, up: v.up, weight: v.weight, detail: v.detail)
        let changed = last.withLock { seen in
            defer { seen[t.id] = v }
            return seen[t.id].map { $0.up != v.up } ?? !v.up
        }
        guard changed, let command = v.up ? t.notifyUp : t.notifyDown else { return }
        ShellCommand.spawn(command)
    }

    /// lvsd is stopping: with keepalived's `omega`, the `notify_down` of
    /// every server that is up runs now (each within 10 s).
    public func runOmegaNotifiers() async {
        let seen = last.withLock { $0 }
        for t in targets where t.omega && seen[t.id]?.up != false {
            if let command = t.notifyDown { _ = await ShellCommand.run(command, timeout: 10) }
        }
    }

    public struct Verdict: Sendable, Equatable {
        public var up: Bool
        public var weight: Int32?
        public var detail: String
    }

    /// Every checker of the server: up when all pass. As keepalived, a server
    /// that is up (or not checked yet) gets `retry` more tries before it is
    /// down; one that is down gets one.
    public static func check(_ t: HealthTarget, wasUp: Bool?, group: any EventLoopGroup) async -> Verdict {
        var weight: Int32? = nil
        for c in t.checks {
            var last = Verdict(up: false, detail: "")
            for attempt in 0...(wasUp ?? true ? c.retry : 0) {
                if attempt > 0 && c.delayBeforeRetry > 0 { try? await Task.sleep(for: .seconds(min(c.delayBeforeRetry, 60))) }
                last = await run(
                    c, address: c.connectAddress ?? t.server.address, port: c.connectPort ?? t.server.port, weight: t.server.weight, group: group)
                if last.up { break }
            }
            guard last.up else { return Verdict(up: false, detail: "\(c.kind.name): \(last.detail)") }
            if let w = last.weight { weight = w }
        }
        return Verdict(up: true, weight: weight, detail: "")
    }

    /// One try of one checker; `weight`: the server's configured weight (FILE_CHECK adds to it).
    static func run(_ c: HealthCheck, address: IPAddress, port: UInt16, weight: Int32, group: any EventLoopGroup) async -> Verdict {
        switch c.kind {
        case .file(let path, let factor, let reverse):
            let value = KernelFile.firstLine(path).flatMap { Int($0.filter { !$0.isWhitespace }) } ?? 0
            guard factor != 0 else { return value == 0 ? Verdict(up: true, detail: "") : Verdict(up: false, detail: "\(path) holds \(value)") }
            let moved = Int(weight) + (reverse ? -1 : 1) * value * factor
            return Verdict(up: true, weight: Int32(min(65535, max(0, moved))), detail: "")
        case .tcp:
            switch await Probe.exchange(address, port, request: nil, tls: false, timeout: c.connectTimeout, group: group) {
            case .success: return Verdict(up: true, detail: "")
            case .failure(let e): return Verdict(up: false, detail: e.description)
            }
        case .http(let urls, let tls):
            for u in urls {
                let request = HTTPProbe.request(address, path: u.path, host: u.virtualhost)
                switch await Probe.exchange(
                    address, port, request: request, tls: tls, timeout: c.connectTimeout, group: group, preamble: c.proxyPreamble,
                    serverName: c.sni ? u.virtualhost : nil
                ).flatMap(HTTPProbe.parse) {
                case .success(let r) where !u.accepts(r.status):
                    let expected = u.statuses.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ",")
                    return Verdict(up: false, detail: "\(u.path): status \(r.status), expected \(expected)")
                case .success(let r):
                    if let digest = u.digest, HTTPProbe.md5(r.body) != digest {
                        return Verdict(up: false, detail: "\(u.path): digest \(HTTPProbe.md5(r.body)), expected \(digest)")
                    }
                case .failure(let e): return Verdict(up: false, detail: "\(u.path): \(e.description)")
                }
            }
            return Verdict(up: true, detail: "")
        case .misc(let command, let timeout, let dynamic):
            guard let rc = await ShellCommand.run(command, timeout: timeout) else { return Verdict(up: false, detail: "timed out after \(timeout) s") }
            if rc == 0 { return Verdict(up: true, detail: "") }
            if rc >= 2 && dynamic { return Verdict(up: true, weight: Int32(rc - 2), detail: "") }
            return Verdict(up: false, detail: "exit status \(rc)")
        case .smtp(let helo, let hosts):
            for h in hosts.isEmpty ? [HealthCheck.Endpoint()] : hosts {
                let (a, p) = (h.address ?? address, h.port ?? port)
                if case .failure(let e) = await Probe.exchange(
                    a, p, request: [], tls: false, timeout: c.connectTimeout, group: group, dialog: SMTPDialog(helo: helo)
                ).flatMap(SMTPDialog.verdict) {
                    return Verdict(up: false, detail: hosts.isEmpty ? e.description : "\(a.isIPv6 ? "[\(a)]" : "\(a)"):\(p): \(e.description)")
                }
            }
            return Verdict(up: true, detail: "")
        case .dns(let type, let name):
            let id = UInt16.random(in: 0...UInt16.max)
            switch await DatagramProbe.exchange(
                address, port, payload: DNSProbe.query(id: id, type: type, name: name), timeout: c.connectTimeout, group: group,
                accepts: { DNSProbe.answers($0, id: id) })
            {
            case .success(let reply?) where DNSProbe.rcode(reply) == 0: return Verdict(up: true, detail: "")
            case .success(let reply?): return Verdict(up: false, detail: "rcode \(DNSProbe.rcode(reply))")
            case .success(nil): return Verdict(up: false, detail: "no answer within \(c.connectTimeout) s")
            case .failure(let e): return Verdict(up: false, detail: e.description)
            }
        case .ping:
            let id = UInt16.random(in: 0...UInt16.max)
            let v6 = address.isIPv6
            switch await DatagramProbe.exchange(
                address, 0, payload: PingProbe.request(id: id, ipv6: v6), timeout: c.connectTimeout, group: group,
                raw: v6 ? Int32(IPPROTO_ICMPV6) : Int32(IPPROTO_ICMP), accepts: { PingProbe.answers($0, id: id, ipv6: v6) })
            {
            case .success(.some): return Verdict(up: true, detail: "")
            case .success(nil): return Verdict(up: false, detail: "no echo reply within \(c.connectTimeout) s")
            case .failure(let e): return Verdict(up: false, detail: e.description)
            }
        case .udp(let payload, let reply):
            switch await DatagramProbe.exchange(
                address, port, payload: payload, timeout: c.connectTimeout, group: group, accepts: { reply?.accepts($0) ?? true })
            {
            case .success(nil) where reply != nil: return Verdict(up: false, detail: "no matching reply within \(c.connectTimeout) s")
            case .success: return Verdict(up: true, detail: "")
            case .failure(let e): return Verdict(up: false, detail: e.description)
            }
        }
    }
}

/// At most so many checks at a time; the others wait their turn.
actor CheckSlots {
    var free: Int
    var waiting: [CheckedContinuation<Void, Never>] = []

    init(_ count: Int) { free = max(1, count) }

    func acquire() async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { free += 1 } else { waiting.removeFirst().resume() }
    }
}

/// keepalived.conf's checkers as a service: they start with lvsd, start
/// again on each successful reload (the verdicts carried over), and at
/// shutdown run keepalived's `omega` scripts.
public final class HealthService: Service, Sendable {
    let plane: ControlPlane
    let group: any EventLoopGroup
    let logger: Logger
    let reloads: AsyncStream<Void>
    let reloaded: AsyncStream<Void>.Continuation
    /// Servers a predecessor's checkers held down (a handover), by checker id: they start down.
    let inherited: [String: String]

    public init(plane: ControlPlane, group: any EventLoopGroup, logger: Logger, inherited: [String: String] = [:]) {
        self.inherited = inherited
        self.plane = plane
        self.group = group
        self.logger = logger
        (reloads, reloaded) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Call after each successful reload.
    public func restart() { reloaded.yield() }

    public func run() async throws {
        var current = start(after: nil)
        for await _ in reloads.cancelOnGracefulShutdown() {
            current = start(after: current)
        }
        if let (monitor, task) = current {
            task.cancel()
            await task.value
            await monitor.runOmegaNotifiers()
        }
        await plane.runOmegaQuorumDown()
    }

    /// Stops `previous`'s checks and starts the files' checkers, or keeps
    /// `previous` when the files cannot be read.
    func start(after previous: (HealthMonitor, Task<Void, Never>)?) -> (HealthMonitor, Task<Void, Never>)? {
        do {
            let (targets, quorum) = try plane.sources.loadHealth()
            let next = HealthMonitor(plane: plane, targets: targets, group: group, logger: logger)
            previous?.1.cancel()
            plane.resetHealth(quorum: quorum)
            let before = previous?.0
            let inherited = previous == nil ? inherited.mapValues { HealthMonitor.Verdict(up: false, detail: $0) } : [:]
            return (next, Task { await next.run(after: before, inherited: inherited) })
        } catch {
            logger.error("health checks not restarted: \(error)")
            return previous
        }
    }
}
