import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// SCTP through lvsd between usrsctp's own programs (this kernel has no
/// SCTP: they speak it over raw IP, and check every packet's CRC32c). The
/// real servers run usrsctp's daytime server (port 13).
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct SCTPEndToEndTests {
    static let bin = Executables.directory
    static let usrsctp = "/usr/lib/usrsctp/"

    /// A lab with lvsd and usrsctp's daytime server on every real server.
    func withLab(_ prefix: String, workers: Int = 1, dr: Bool = false, _ body: (Lab) throws -> Void) throws {
        let lab = try Lab(prefix: prefix, bin: Self.bin, queues: workers)
        defer { lab.teardown() }
        do {
            try lab.startDirector(extra: ["--workers", String(workers)])
            for i in 1...3 {
                // 0: no UDP encapsulation, SCTP straight over IP. usrsctp's receive thread sometimes
                // segfaults in libc (the kernel's log shows "SCTP/IP4 rcv … segfault"): the server is
                // started again at once, and each end is logged (`crashes`).
                let server = [
                    "sh", "-c",
                    "trap 'kill $c; exit' TERM; while :; do \(Self.usrsctp)daytime_server 0 & c=$!; wait $c; echo \"daytime_server ended: $?\"; done",
                ]
                guard dr else {
                    try lab.start("r\(i)", server, logName: "daytime\(i)")
                    continue
                }
                // usrsctp answers an INIT from any address it knows, in turn, and sends from none on a loopback
                // device: for DR it starts knowing only the VIP, on a device of its own, and the real server's
                // own address comes back after (the director needs it to find the server's MAC).
                try lab.inside("r\(i)", Self.bin.appendingPathComponent("lvs-realserver").path, "dr-setup", "--device", "vip0", Lab.vip)
                try lab.inside("r\(i)", "ip", "addr", "del", Lab.real(i) + "/24", "dev", lab.ns("r\(i)"))
                try lab.start("r\(i)", server, logName: "daytime\(i)")
                usleep(500_000)
                try lab.inside("r\(i)", "ip", "addr", "add", Lab.real(i) + "/24", "dev", lab.ns("r\(i)"))
            }
            try body(lab)
        } catch {
            Issue.record("\(error)\n--- lvsd ---\n\(lab.logText("lvsd"))")
        }
    }

    /// `lanes` client hosts beside the lab's client, 198.18.k.100 behind
    /// the router: usrsctp speaks over raw IP, where every stack in a
    /// namespace sees every packet and answers others' (an ABORT that kills
    /// their association), so each association needs a namespace of its own.
    /// Removed when `body` returns.
    func withLanes(_ lab: Lab, _ lanes: Int, _ body: ([(namespace: String, address: String)]) throws -> Void) throws {
        let made = (1...lanes).map { (namespace: lab.ns("q\($0)"), address: "198.18.\($0).100") }
        defer { for lane in made { _ = try? Lab.exec(["ip", "netns", "del", lane.namespace], check: false) } }
        for (k, lane) in made.enumerated() {
            let router = lab.ns("rq\(k + 1)")
            for command in [
                ["netns", "add", lane.namespace],
                ["link", "add", lane.namespace, "netns", lane.namespace, "type", "veth", "peer", "name", router, "netns", lab.ns("rt")],
                ["-n", lane.namespace, "addr", "add", lane.address + "/24", "dev", lane.namespace],
                ["-n", lane.namespace, "link", "set", lane.namespace, "up"],
                ["-n", lane.namespace, "route", "add", "default", "via", "198.18.\(k + 1).254"],
                ["-n", lab.ns("rt"), "addr", "add", "198.18.\(k + 1).254/24", "dev", router],
                ["-n", lab.ns("rt"), "link", "set", router, "up"],
            ] {
                try Lab.exec(["ip"] + command)
            }
        }
        try body(made)
    }

    /// What a client saw of its association.
    struct Association {
        /// The association came up (or its data arrived, when the client was stopped before it printed that).
        var established: Bool
        /// The server's time of day arrived (usrsctp delivers nothing whose CRC32c is wrong).
        var served: Bool
        /// It closed gracefully (SHUTDOWN COMPLETE) before the client's 30 s ran out.
        var closed: Bool
        /// A real server's own address among the peer's addresses the client learnt.
        var learntRealServer: Bool
        var output: String
    }

    /// `count` associations to `vip`:`port` from `lanes` client hosts, one at
    /// a time on each, each client's input held open 0.3 s (at its end it
    /// shuts down, and might before the server has sent), by client ("address:port").
    func associations(_ lab: Lab, _ vip: String, _ port: Int, count: Int, lanes: Int = 25) throws -> [String: Association] {
        var seen: [String: Association] = [:]
        try withLanes(lab, lanes) { hosts in
            let each = count / lanes
            let script =
                hosts.map { lane in
                    """
                    ip netns exec \(lane.namespace) sh -c 'for p in $(seq 20001 \(20000 + each)); do \
                    echo "\(lane.address):$p $(sleep 0.3 | timeout 30 \(Self.usrsctp)client \(vip) \(port) $p 0 2>&1 | tr "\\n" " ")"; done' &
                    """
                }.joined(separator: "\n") + "\nwait"
            for line in try Lab.exec(["sh", "-c", script]).split(separator: "\n") {
                let text = String(line)
                let list = text.range(of: "Peer addresses: ").map { text[$0.upperBound...].components(separatedBy: ". ")[0] + "." } ?? ""
                let served = text.contains(try Regex(" [0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4}"))
                seen[String(text.prefix { $0 != " " })] = Association(
                    established: served || text.contains("SCTP_COMM_UP"), served: served, closed: text.contains("SCTP_SHUTDOWN_COMP"),
                    learntRealServer: (1...3).contains { list.contains(Lab.real($0) + ",") || list.contains(Lab.real($0) + ".") }, output: text)
            }
        }
        return seen
    }

    /// The real server of each connection in lvsd's `-c` listing, by client ("address:port"), and the states listed.
    func entries(_ lab: Lab) throws -> (servers: [String: String], states: [String: Int]) {
        var servers: [String: String] = [:]
        var states: [String: Int] = [:]
        for row in try lab.lvsadm("-L -n -c").split(separator: "\n").dropFirst(2) {
            let f = row.split(separator: " ")
            guard f.count >= 6, f[0] == "SCTP" else { continue }
            states[String(f[2]), default: 0] += 1
            let rip = f[5].split(separator: ":").first.map(String.init) ?? ""
            servers[String(f[3])] = (1...3).first { Lab.real($0) == rip }.map { "rs\($0)" } ?? rip
        }
        return (servers, states)
    }

    /// 1000 associations by round robin through NAT (moving the port: Diameter's
    /// 3868 to the daytime server's 13), FULLNAT (the source too) and DR: each
    /// gets the time of day, usrsctp having checked every packet's CRC32c, and
    /// closes; lvsd lists each in a closing state, 333/333/334; through NAT
    /// and FULLNAT the client learns no real server's address (lvsd pads them
    /// out of INIT ACK).
    /// FULLNAT again with two workers on two-queue veths: each association's
    /// packets, both ways, meet on the worker that holds its entry.
    @Test(arguments: [("-m", 1), ("-b", 1), ("-g", 1), ("-b", 2)]) func aThousandAssociations(method: String, workers: Int) throws {
        try withLab("ltsctp", workers: workers, dr: method == "-g") { lab in
            try lab.gateway(viaDirector: method == "-m")
            let vport = method == "-g" ? 13 : 3868
            try lab.lvsadm("-A --sctp-service \(Lab.vip):\(vport) -s rr")
            if method == "-b" { try lab.lvsadm("--add-laddr --sctp-service \(Lab.vip):\(vport) -z \(Lab.lip)") }
            for i in 1...3 { try lab.lvsadm("-a --sctp-service \(Lab.vip):\(vport) -r \(Lab.real(i)):13 \(method)") }
            let seen = try associations(lab, Lab.vip, vport, count: 1000)
            let failed = seen.values.filter { !$0.established }.map(\.output)
            // What a real server's crash takes with it: the associations it held at the time.
            let crashes = (1...3).map { lab.logText("daytime\($0)").components(separatedBy: "daytime_server ended").count - 1 }.reduce(0, +)
            #expect(
                seen.count == 1000 && failed.count <= 10 * crashes,
                "\(method): \(failed.count) never came up (\(crashes) server crashes): \(failed.prefix(3))")
            if crashes > 0 { print("\(method): usrsctp's daytime_server crashed \(crashes) times and was started again") }
            // Seen once in 4000: a client that shut down (its input ends after 0.3 s) before the server had sent.
            let served = seen.values.filter(\.served).count
            #expect(served >= 990 - 10 * crashes, "\(method): \(served) served")
            // Seen once or twice in 1000: a client whose shutdown was still retrying when its 30 s ran out.
            let closed = seen.values.filter(\.closed).count
            #expect(closed >= 990 - 10 * crashes, "\(method): \(closed) closed")
            // A DR server restarted after a crash starts with its own address there too, and names it (see withLab).
            #expect(
                !seen.values.contains { $0.learntRealServer } || (method == "-g" && crashes > 0), "\(method): a client learnt a real server's address")
            let (servers, states) = try entries(lab)
            // Where the server's SHUTDOWN and SHUTDOWN ACK share a packet, IPVS reads the SHUTDOWN and stays in
            // S-RECEIVED until the timeout, as lvsd does.
            #expect(servers.count == 1000 && (states["CLOSED"] ?? 0) + (states["S-RECEIVED"] ?? 0) >= closed, "\(method): \(states)")
            let spread = servers.values.reduce(into: [:]) { $0[$1, default: 0] += 1 }
            #expect(spread.count == 3 && spread.values.allSatisfy { abs($0 - 333) <= 1 }, "\(method): \(spread)")
            let row = try lab.lvsadm("-L -n --sctp-service \(Lab.vip):\(vport) --stats --exact").split(separator: "\n")[2].split(separator: " ")
            #expect(row.prefix(3) == ["SCTP", "\(Lab.vip):\(vport)", "1000"], "\(row)")
        }
    }
}
