import Foundation
import LVSSystem
import LVSCore
import LVSPacket
import Logging

/// Keeps the kernel's stack off the frames lvsd owns: an nftables `netdev`
/// ingress chain per served interface drops packets to VIPs and local
/// addresses. AF_PACKET taps frames before the ingress hook, so lvsd still
/// sees them; the kernel never answers them (no RST, no ICMP) and does not
/// spend time on them. Without `nft` it logs once and does nothing.
public final class KernelFilter: @unchecked Sendable {
    let interfaces: [String]
    let logger: Logger
    let table: String
    var installed: Set<IPAddress>? = nil
    let nft: String?

    public init(interfaces: [String], logger: Logger) {
        self.interfaces = interfaces
        self.logger = logger
        table = "lvsd_\(getpid())"
        nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first { FileManager.default.isExecutableFile(atPath: $0) }
        if nft == nil { logger.notice("nft not found: the kernel is kept off owned addresses only by forwarding being off") }
    }

    /// Installs or replaces the drop rules for `owned`.
    public func update(owned: [IPAddress]) {
        guard let nft, Set(owned) != installed else { return }
        let sorted = owned.sorted()
        let v4 = sorted.filter { !$0.isIPv6 }.map(\.description), v6 = sorted.filter(\.isIPv6).map(\.description)
        var script = "table netdev \(table)\ndelete table netdev \(table)\ntable netdev \(table) {\n"
        for (k, name) in interfaces.enumerated() {
            script += "  chain in\(k) {\n    type filter hook ingress device \"\(name)\" priority -500; policy accept;\n"
            if !v4.isEmpty { script += "    ip daddr { \(v4.joined(separator: ", ")) } drop\n" }
            if !v6.isEmpty { script += "    ip6 daddr { \(v6.joined(separator: ", ")) } drop\n" }
            script += "  }\n"
        }
        script += "}\n"
        if run(nft, ["-f", "-"], input: script) {
            installed = Set(owned)
            logger.info("kernel kept off owned addresses (nftables netdev ingress)", metadata: ["table": "\(table)", "addresses": "\(owned.count)"])
        }
    }

    public func remove() {
        guard let nft, installed != nil else { return }
        _ = run(nft, ["delete", "table", "netdev", table])
        installed = nil
    }

    func run(_ tool: String, _ args: [String], input: String = "") -> Bool {
        let outcome = ChildProcess.run(tool, args, input: input, timeout: 10)
        if outcome.status != 0 { logger.warning("nft failed (\(outcome.status.map(String.init) ?? "timed out")): \(outcome.errorOutput)") }
        return outcome.status == 0
    }
}
