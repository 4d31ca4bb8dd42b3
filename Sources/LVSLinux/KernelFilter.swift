import LVSPacket
import LVSSystem
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Keeps the kernel's stack off the frames lvsd owns: an nftables `netdev`
/// ingress chain per served interface drops packets to VIPs and local
/// addresses. AF_PACKET taps frames before the ingress hook, so lvsd still
/// sees them; the kernel never answers them (no RST, no ICMP) and does not
/// spend time on them. Without `nft` it logs once and does nothing. Its
/// caller serializes its calls (one task owns it).
public final class KernelFilter: Sendable {
    let interfaces: [String]
    let logger: Logger
    let table: String
    let installed = Mutex<Set<IPAddress>?>(nil)
    let nft: String?

    public init(interfaces: [String], logger: Logger) {
        self.interfaces = interfaces
        self.logger = logger
        table = "lvsd_\(getpid())"
        nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first(where: FileSystem.isExecutable)
        if nft == nil { logger.notice("nft not found: the kernel is kept off owned addresses only by forwarding being off") }
    }

    /// Installs or replaces the drop rules for `owned`.
    public func update(owned: [IPAddress]) async {
        guard let nft, Set(owned) != installed.withLock({ $0 }) else { return }
        let sorted = owned.sorted()
        let v4 = sorted.filter { !$0.isIPv6 }.map(\.description)
        let v6 = sorted.filter(\.isIPv6).map(\.description)
        var script = installed.withLock({ $0 }) == nil ? await stale(nft) : ""
        script += "table netdev \(table)\ndelete table netdev \(table)\ntable netdev \(table) {\n"
        for (k, name) in interfaces.enumerated() {
            script += "  chain in\(k) {\n    type filter hook ingress device \"\(name)\" priority -500; policy accept;\n"
            if !v4.isEmpty { script += "    ip daddr { \(v4.joined(separator: ", ")) } drop\n" }
            if !v6.isEmpty { script += "    ip6 daddr { \(v6.joined(separator: ", ")) } drop\n" }
            script += "  }\n"
        }
        script += "}\n"
        if await run(nft, ["-f", "-"], input: script) {
            installed.withLock { $0 = Set(owned) }
            logger.info("kernel kept off owned addresses (nftables netdev ingress)", metadata: ["table": "\(table)", "addresses": "\(owned.count)"])
        }
    }

    /// Deletions of the tables of lvsd processes that have gone without
    /// removing theirs (killed, or exited after a handover).
    func stale(_ nft: String) async -> String {
        let listed = await ChildProcess.run(nft, ["list", "tables", "netdev"], timeout: 10, options: .init(captureOutput: true)).output
        var script = ""
        for line in listed.split(separator: "\n") {
            guard line.hasPrefix("table netdev lvsd_"), let pid = Int32(line.dropFirst("table netdev lvsd_".count)), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { script += "delete table netdev lvsd_\(pid)\n" }
        }
        return script
    }

    public func remove() async {
        guard let nft, installed.withLock({ $0 }) != nil else { return }
        _ = await run(nft, ["delete", "table", "netdev", table])
        installed.withLock { $0 = nil }
    }

    func run(_ tool: String, _ args: [String], input: String = "") async -> Bool {
        let outcome = await ChildProcess.run(tool, args, input: input, timeout: 10)
        if outcome.status != 0 { logger.warning("nft failed (\(outcome.status.map(String.init) ?? "timed out")): \(outcome.errorOutput)") }
        return outcome.status == 0
    }
}
