import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// `lvsd --kernel-forwarding`: lvsd sees each connection through its
/// handshake, then a tc program forwards its frames in the kernel until a
/// FIN or RST gives it back. Offloads as the kernel sets them.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct KernelForwardingTests {
    static let bin = Executables.directory

    func metric(_ lab: Lab, _ name: String) throws -> Int {
        let metrics = try lab.inside("d", "curl", "-sS", "http://127.0.0.1:19187/metrics")
        return metrics.split(separator: "\n").filter { $0.hasPrefix(name + "{") }
            .compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }.reduce(0, +)
    }

    /// The service's packets in and out, as `lvsadm -L -n --stats --exact` shows them.
    func packets(_ lab: Lab, _ service: String) throws -> (connections: Int, inPackets: Int, outPackets: Int) {
        let stats = try lab.lvsadm("-L -n --stats --exact")
        let row = stats.split(separator: "\n").first { $0.contains(service) }.map { $0.split(separator: " ").compactMap { Int($0) } } ?? []
        return row.count >= 3 ? (row[0], row[1], row[2]) : (0, 0, 0)
    }

    /// The iperf3 client's bytes sent (its JSON's largest "bytes").
    func sent(_ json: String) -> Int {
        json.components(separatedBy: "\"bytes\":").dropFirst().compactMap { Int($0.drop { $0.isWhitespace }.prefix { $0.isNumber }) }.max() ?? 0
    }

    @Test func establishedNATAndDRConnectionsGoThroughTheKernel() throws {
        let lab = try Lab(prefix: "ltkf", bin: Self.bin)
        defer { lab.teardown() }
        // Two workers: each hands down its own connections and counts them in its own slots.
        try lab.startDirector(extra: ["--kernel-forwarding", "--workers", "2", "--metrics", "127.0.0.1:19187"])
        try lab.startNginx()
        do {
            try lab.gateway(viaDirector: true)
            for i in 1...3 { try lab.start("r\(i)", ["iperf3", "-s", "-p", "5201"], logName: "iperf\(i)") }
            try lab.lvsadm("-A -t \(Lab.vip):80 -s rr")
            try lab.lvsadm("-A -t \(Lab.vip):5201 -s rr -p 60")
            try lab.lvsadm("-A -t [\(Lab.vip6)]:80 -s rr")
            for i in 1...3 {
                try lab.lvsadm("-a -t \(Lab.vip):80 -r \(Lab.real(i)):8080 -m")
                try lab.lvsadm("-a -t \(Lab.vip):5201 -r \(Lab.real(i)):5201 -m")
                try lab.lvsadm("-a -t [\(Lab.vip6)]:80 -r [\(Lab.real6(i))]:8080 -m")
            }
            // The rings see frames after tc ingress (bound to IPv4, IPv6 and ARP), so the kernel is kept off the VIPs after them, in prerouting.
            #expect(waitFor(limit: 5) { ((try? lab.inside("d", "nft", "list", "ruleset", "inet")) ?? "").contains(Lab.vip6) } != nil)
            #expect(try !lab.inside("d", "nft", "list", "ruleset", "netdev").contains(Lab.vip))
            // Short connections: every request and answer after the handshake goes through the kernel, rr exact as ever.
            let before = try metric(lab, "lvsd_kernel_forwarded_packets_total")
            let answers = try lab.requests("http://\(Lab.vip)/", count: 300)
            #expect(answers.count == 300)
            let spread = answers.reduce(into: [String: Int]()) { $0[String($1.split(separator: " ")[0]), default: 0] += 1 }
            #expect(spread == ["rs1": 100, "rs2": 100, "rs3": 100], "\(spread)")
            #expect(answers.allSatisfy { $0.hasSuffix(" 8080") && $0.contains(" \(Lab.client) ") })
            // A bulk stream: the kernel forwards it whole; lvsd counts it, once a second.
            let json = try lab.inside("c", "iperf3", "-c", Lab.vip, "-p", "5201", "-t", "3", "-J", "--connect-timeout", "3000")
            #expect(sent(json) > 100_000_000, "\(json.suffix(800))")
            usleep(1_500_000)
            let forwarded = try metric(lab, "lvsd_kernel_forwarded_packets_total") - before
            let stream = try packets(lab, "\(Lab.vip):5201")
            #expect(forwarded > 10_000 && stream.inPackets > 10_000 && stream.outPackets > 1000, "forwarded \(forwarded), stream \(stream)")
            let web = try packets(lab, "\(Lab.vip):80")
            #expect(web.connections == 300 && web.inPackets >= 300 * 5 && web.outPackets >= 300 * 4, "\(web)")
            // Nothing stays handed down once closed; IPv6 stays with lvsd and works beside it.
            let conns = try lab.lvsadm("-L -n -c")
            #expect(!conns.contains("ESTABLISHED"), "\(conns)")
            let six = try lab.requests("http://[\(Lab.vip6)]/", count: 30)
            #expect(six.count == 30)
            // A UDP flow from its first datagram: 200 from one socket, their answers back.
            for i in 1...3 { try lab.startRealServerTool(i, ["serve", "--udp", "--port", "5353", "--name", "rs\(i)"], logName: "udp\(i)") }
            try lab.lvsadm("-A -u \(Lab.vip):53 -s rr")
            for i in 1...3 { try lab.lvsadm("-a -u \(Lab.vip):53 -r \(Lab.real(i)):5353 -m") }
            usleep(300_000)
            let udpBefore = try metric(lab, "lvsd_kernel_forwarded_packets_total")
            let echoed = try lab.inside(
                "c", "bash", "-c",
                "exec 3<>/dev/udp/\(Lab.vip)/53; for i in $(seq 200); do echo hello >&3; timeout -s KILL 2 head -n 1 <&3; done | grep -c peer=")
            #expect(echoed.trimmingCharacters(in: .whitespacesAndNewlines) == "200")
            usleep(1_500_000)
            let udpForwarded = try metric(lab, "lvsd_kernel_forwarded_packets_total") - udpBefore
            #expect(udpForwarded >= 2 * 198, "\(udpForwarded)")
            // DR: only the client's direction passes the director.
            try lab.lvsadm("-C")
            try lab.gateway(viaDirector: false)
            for i in 1...3 { try lab.inside("r\(i)", Self.bin.appendingPathComponent("lvs-realserver").path, "dr-setup", Lab.vip) }
            try lab.lvsadm("-A -t \(Lab.vip):5201 -s rr -p 60")
            for i in 1...3 { try lab.lvsadm("-a -t \(Lab.vip):5201 -r \(Lab.real(i)):5201 -g") }
            let drBefore = try metric(lab, "lvsd_kernel_forwarded_packets_total")
            let dr = try lab.inside("c", "iperf3", "-c", Lab.vip, "-p", "5201", "-t", "2", "-J", "--connect-timeout", "3000")
            #expect(sent(dr) > 50_000_000, "\(dr.suffix(800))")
            usleep(1_500_000)
            #expect(try metric(lab, "lvsd_kernel_forwarded_packets_total") - drBefore > 5000)
            // A bridge's port hands its frames to the bridge before protocol-bound rings see them: refused by name.
            try lab.inside("d", "ip", "link", "add", "ltkfbr", "type", "bridge")
            try lab.inside("d", "ip", "link", "add", "ltkfport", "master", "ltkfbr", "type", "veth", "peer", "name", "ltkfpeer")
            let refused = try lab.inside(
                "d", "timeout", "20", Self.bin.appendingPathComponent("lvsd").path, "--interface", "ltkfport", "--kernel-forwarding",
                "--socket", lab.directory.appendingPathComponent("refused.sock").path, check: false)
            #expect(refused.contains("--kernel-forwarding cannot serve ltkfport"), "\(refused)")
        } catch {
            Issue.record("\(error)\n--- lvsd ---\n\(lab.logText("lvsd"))")
        }
    }
}
