import LVSPacket
import LVSSystem
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Keeps the kernel's stack off the frames lvsd owns: an nftables `netdev`
/// ingress chain per served interface drops packets to VIPs and local
/// addresses. AF_PACKET rings for every protocol tap frames before the
/// ingress hook, so lvsd still sees them; the kernel never answers them (no
/// RST, no ICMP) and does not spend time on them. Rings bound to their
/// protocols (kernel forwarding) see frames after that hook, so the drop
/// moves to an `inet` prerouting chain, which comes after them and before
/// conntrack. Without `nft` it logs once and does nothing. Its caller
/// serializes its calls (one task owns it).
public final class KernelFilter: Sendable {
    let interfaces: [String]
    let logger: Logger
    let table: String
    /// `netdev`, or `inet` when the rings see frames after the ingress hook.
    let family: String
    let installed = Mutex<Set<IPAddress>?>(nil)
    let nft: String?

    public init(interfaces: [String], ringsAfterIngress: Bool = false, logger: Logger) {
        self.interfaces = interfaces
        self.logger = logger
        family = ringsAfterIngress ? "inet" : "netdev"
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
        script += "table \(family) \(table)\ndelete table \(family) \(table)\ntable \(family) \(table) {\n"
        func drops(_ match: String) {
            if !v4.isEmpty { script += "    \(match)ip daddr { \(v4.joined(separator: ", ")) } drop\n" }
            if !v6.isEmpty { script += "    \(match)ip6 daddr { \(v6.joined(separator: ", ")) } drop\n" }
        }
        if family == "inet" {
            script += "  chain in {\n    type filter hook prerouting priority -500; policy accept;\n"
            drops("iifname { \(interfaces.map { "\"\($0)\"" }.joined(separator: ", ")) } ")
            script += "  }\n"
        } else {
            for (k, name) in interfaces.enumerated() {
                script += "  chain in\(k) {\n    type filter hook ingress device \"\(name)\" priority -500; policy accept;\n"
                drops("")
                script += "  }\n"
            }
        }
        script += "}\n"
        if await run(nft, ["-f", "-"], input: script) {
            installed.withLock { $0 = Set(owned) }
            logger.info(
                "kernel kept off owned addresses (nftables \(family == "inet" ? "prerouting" : "netdev ingress"))",
                metadata: ["table": "\(family) \(table)", "addresses": "\(owned.count)"])
        }
    }

    /// Deletions of the tables of lvsd processes that have gone without
    /// removing theirs (killed, or exited after a handover).
    func stale(_ nft: String) async -> String {
        var script = ""
        for family in ["netdev", "inet"] {
            let listed = await ChildProcess.run(nft, ["list", "tables", family], timeout: 10, options: .init(captureOutput: true)).output
            let prefix = "table \(family) lvsd_"
            for line in listed.split(separator: "\n") {
                guard line.hasPrefix(prefix), let pid = Int32(line.dropFirst(prefix.count)), pid != getpid() else { continue }
                if kill(pid, 0) != 0 && errno == ESRCH { script += "delete table \(family) lvsd_\(pid)\n" }
            }
        }
        return script
    }

    public func remove() async {
        guard let nft, installed.withLock({ $0 }) != nil else { return }
        _ = await run(nft, ["delete", "table", family, table])
        installed.withLock { $0 = nil }
    }

    func run(_ tool: String, _ args: [String], input: String = "") async -> Bool {
        let outcome = await ChildProcess.run(tool, args, input: input, timeout: 10)
        if outcome.status != 0 { logger.warning("nft failed (\(outcome.status.map(String.init) ?? "timed out")): \(outcome.errorOutput)") }
        return outcome.status == 0
    }
}
