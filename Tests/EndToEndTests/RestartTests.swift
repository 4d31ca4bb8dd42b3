import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// lvsd killed with SIGKILL and started again with the same arguments: the
/// connections it carried go on, restored from its state file (written by
/// the workers where a sync master would send each connection, on tmpfs,
/// so that the dead process's pages stay). A damaged file costs what it
/// damaged, never the start.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct RestartTests {
    static let bin = Executables.directory
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("ha")

    /// Round `k` of the many_clients.py logging to `log`: connections answered again by their server, and its line.
    func round(_ lab: Lab, _ log: String, _ go: String, _ k: Int) -> (ok: Int, line: String) {
        _ = FileManager.default.createFile(atPath: "\(go).\(k)", contents: nil)
        _ = waitFor(limit: 60) { lab.logText(log).contains("\"round\": \(k)") }
        let line = lab.logText(log).split(separator: "\n").last { $0.contains("\"round\": \(k)") }.map(String.init) ?? ""
        let json = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        return ((json?["ok"] as? Int) ?? 0, line)
    }

    /// Milliseconds from now until a new connection to `url` is answered.
    func firstAnswer(_ lab: Lab, _ url: String) -> Int? {
        waitFor(limit: 30, every: 0.01) {
            (try? lab.inside("c", "curl", "-s", "-m", "0.5", "--connect-timeout", "0.5", url, check: true)).map { !$0.isEmpty } ?? false
        }
    }

    func startDirector(_ lab: Lab, _ rules: String) throws -> RunningProcess {
        try lab.startDirector(extra: ["--rules", rules, "--workers", "2"])
    }

    /// NAT (IPv4 and IPv6), FULLNAT and a SYN-proxied NAT service from a
    /// rules file, each with 100 idle keep-alive connections, and an iperf3
    /// stream through NAT and through FULLNAT, under lvsd with 2 workers on
    /// 2-queue veths. Returns the rules and their file, and the streams.
    func natFamily(_ lab: Lab, go: String) throws -> (text: String, rules: String, lvsd: RunningProcess, streams: [(String, RunningProcess)]) {
        var text = ""
        for (service, port, extra) in [
            ("\(Lab.vip):80", 8080, "-m"), ("[\(Lab.vip6)]:80", 8080, "-m"), ("\(Lab.vip):81", 8080, "-m"), ("\(Lab.vip):82", 8080, "-b"),
            ("\(Lab.vip):5201", 5201, "-m"), ("\(Lab.vip):5202", 5202, "-b"),
        ] {
            text += "-A -t \(service) -s \(service.contains(":520") ? "sh" : "rr")\(service.hasSuffix(":81") ? " -j enable" : "")\n"
            if extra == "-b" { text += "--add-laddr -t \(service) -z \(Lab.lip)\n" }
            for i in 1...3 {
                let rip = service.hasPrefix("[") ? "[\(Lab.real6(i))]" : Lab.real(i)
                text += "-a -t \(service) -r \(rip):\(port) \(extra)\n"
            }
        }
        let rules = lab.directory.appendingPathComponent("rules").path
        try text.write(toFile: rules, atomically: true, encoding: .utf8)
        let lvsd = try startDirector(lab, rules)
        try lab.startNginx(keepalive: 300)
        try lab.gateway(viaDirector: true)
        for i in 1...3 {
            for port in [5201, 5202] { try lab.start("r\(i)", ["iperf3", "-s", "-p", "\(port)"], logName: "iperf3-server\(i)-\(port)") }
        }
        #expect(waitFor(limit: 10) { lab.listening("r3", port: 5201) && lab.listening("r3", port: 5202) } != nil)
        let many = Self.scripts.appendingPathComponent("many_clients.py").path
        try lab.start("c", ["/usr/bin/python3", many, go, "100", Lab.client, "\(Lab.vip):80", "\(Lab.vip):81", "\(Lab.vip):82"], logName: "clients4")
        try lab.start("c", ["/usr/bin/python3", many, go, "100", Lab.client6, "\(Lab.vip6):80"], logName: "clients6")
        #expect(
            waitFor(limit: 60) { lab.logText("clients4").contains("ready") && lab.logText("clients6").contains("ready") } != nil,
            "\(lab.logText("clients4"))\n\(lab.logText("clients6"))\n\(lab.logText("lvsd"))")
        var streams: [(String, RunningProcess)] = []
        for (name, port) in [("NAT", 5201), ("FULLNAT", 5202)] {
            streams.append(
                (
                    name,
                    try lab.start("c", ["iperf3", "-c", Lab.vip, "-p", "\(port)", "-t", "10", "-b", "100M", "-i", "0.1", "--json"], logName: "iperf3-\(name)")
                ))
        }
        usleep(3_000_000)
        return (text, rules, lvsd, streams)
    }

    /// Each stream's longest stall, checked and reported.
    func streamsWentOn(_ lab: Lab, _ streams: [(String, RunningProcess)], _ what: String, context: () -> String) {
        for (name, p) in streams {
            p.waitUntilExit()
            let out = lab.logText("iperf3-\(name)")
            let result = interruption(out)
            #expect(p.terminationStatus == 0 && result != nil && result!.lastSecond > 10_000_000, "\(name): \(out.suffix(1500))\n\(context())")
            print("\(what): iperf3 through \(name) longest stall \(result?.gap ?? -1) ms, last second \(Int((result?.lastSecond ?? 0) / 1e6)) Mbit/s")
        }
    }

    /// lvsd killed and started again with the same arguments.
    @Test func aKilledDirectorStartedAgainLosesNoConnection() throws {
        let lab = try Lab(prefix: "ltcr", bin: Self.bin, queues: 2)
        defer { lab.teardown() }
        let go = lab.directory.appendingPathComponent("go").path
        let context = { "--- lvsd ---\n\(lab.logText("lvsd"))\n--- lvsd -L ---\n\((try? lab.lvsadm("-L -n")) ?? "")" }
        var (text, rules, lvsd, streams) = try natFamily(lab, go: go)
        let before = try lab.lvsadm("-L -n -c").split(separator: "\n").count - 2

        let killed = Date()
        kill(lvsd.processIdentifier, SIGKILL)
        lvsd.waitUntilExit()
        lvsd = try startDirector(lab, rules)
        let started = Int(Date().timeIntervalSince(killed) * 1000)
        let answered = firstAnswer(lab, "http://\(Lab.vip)/")
        print(
            "restart: lvsd killed and started again in \(started) ms; a new connection answered \(answered.map { "\($0 + started)" } ?? "never") ms after the kill"
        )
        let restored = lab.logText("lvsd").split(separator: "\n").last { $0.contains("connections restored") }.map(String.init) ?? ""
        print("restart: \(restored)")
        #expect(restored.contains("dropped: 0 corrupt, 0 of no service, 0 of no real server, 0 invalid, 0 for a full table"), "\(context())")
        let after = try lab.lvsadm("-L -n -c").split(separator: "\n").count - 2
        #expect(after >= 400, "\(before) connections before, \(after) after\n\(context())")

        let (ok4, line4) = round(lab, "clients4", go, 1)
        let (ok6, line6) = round(lab, "clients6", go, 1)
        print("restart: after the kill: \(line4) \(line6)")
        #expect(ok4 == 300 && ok6 == 100, "\(line4)\n\(line6)\n\(context())")
        streamsWentOn(lab, streams, "restart", context: context)
        streams = []

        // A real server gone from the configuration: its connections are dropped and said so, the rest go on.
        kill(lvsd.processIdentifier, SIGKILL)
        lvsd.waitUntilExit()
        try text.split(separator: "\n").filter { !$0.contains(Lab.real(3) + ":") && !$0.contains(Lab.real6(3)) }.joined(separator: "\n")
            .write(toFile: rules, atomically: true, encoding: .utf8)
        lvsd = try startDirector(lab, rules)
        let third = lab.logText("lvsd").split(separator: "\n").last { $0.contains("connections restored") }.map(String.init) ?? ""
        print("restart: without rs3: \(third)")
        #expect(!third.contains(" 0 of no real server") && third.contains("warning"), "\(context())")
        #expect(firstAnswer(lab, "http://\(Lab.vip)/") != nil, "\(context())")

        // The state file cut in the middle of a connection's slot, its slots
        // scribbled over, its header too: lvsd starts, says what it dropped, serves.
        let state = lab.directory.appendingPathComponent("lvsd.state").path
        for damage in ["truncated", "scribbled", "random"] {
            kill(lvsd.processIdentifier, SIGKILL)
            lvsd.waitUntilExit()
            let bytes = try Data(contentsOf: URL(fileURLWithPath: state))
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: state))
            switch damage {
            case "truncated":
                let slot = stride(from: 4096, to: bytes.count, by: 128).first { bytes[$0..<$0 + 128].contains { $0 != 0 } }!
                try handle.truncate(atOffset: UInt64(slot + 50))
            case "scribbled":
                try handle.seek(toOffset: 4096)
                try handle.write(contentsOf: Data((0..<65536).map { _ in UInt8.random(in: 0...255) }))
            default:
                try handle.write(contentsOf: Data((0..<65536).map { _ in UInt8.random(in: 0...255) }))
            }
            try handle.close()
            lvsd = try startDirector(lab, rules)
            #expect(firstAnswer(lab, "http://\(Lab.vip)/") != nil, "\(damage)\n\(context())")
            let said = lab.logText("lvsd").split(separator: "\n").last { $0.contains("state file") }.map(String.init) ?? ""
            print("restart: state file \(damage): \(said)")
            let expected = ["truncated": "dropped: 1 corrupt", "scribbled": "dropped: 512 corrupt", "random": "not used"][damage]!
            #expect(said.contains(expected), "\(context())")
        }
        _ = FileManager.default.createFile(atPath: go + ".end", contents: nil)
    }

    /// A new lvsd takes over from the running one (`--takeover`) while a
    /// client keeps making new connections: none of them fails, no idle
    /// connection is lost, and the old lvsd is gone.
    @Test func aHandoverLosesNothing() throws {
        let lab = try Lab(prefix: "ltho", bin: Self.bin, queues: 2)
        defer { lab.teardown() }
        let go = lab.directory.appendingPathComponent("go").path
        let (_, rules, old, streams) = try natFamily(lab, go: go)
        let context = { "--- old ---\n\(lab.logText("lvsd-old"))\n--- new ---\n\(lab.logText("lvsd"))" }
        let requests = try lab.start(
            "c", ["sh", "-c", "for i in $(seq 400); do curl -s -m 3 -o /dev/null -w '%{http_code}\\n' http://\(Lab.vip)/ || echo failed; sleep 0.005; done"],
            logName: "requests")
        usleep(500_000)
        func served() -> Int {
            let stats = (try? lab.lvsadm("-L -n --stats --exact")) ?? ""
            let row = stats.split(separator: "\n").first { $0.hasPrefix("TCP  \(Lab.vip):80 ") }
            return row.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[2]) } ?? -1
        }
        let before = served()
        try? FileManager.default.moveItem(
            atPath: lab.directory.appendingPathComponent("lvsd.log").path, toPath: lab.directory.appendingPathComponent("lvsd-old.log").path)
        let started = Date()
        let new = try lab.takeOver(extra: ["--rules", rules, "--workers", "2"], logName: "lvsd")
        old.waitUntilExit()
        print("handover: the old lvsd exited \(Int(Date().timeIntervalSince(started) * 1000)) ms after the new one started")
        #expect(waitFor(limit: 10) { lab.logText("lvsd").contains("took over") } != nil, "\(context())")
        print("handover: \(lab.logText("lvsd-old").split(separator: "\n").filter { $0.contains("handing over") }.joined(separator: "\n"))")
        print("handover: \(lab.logText("lvsd").split(separator: "\n").filter { $0.contains("restored") || $0.contains("took over") }.joined(separator: "\n"))")
        let (ok4, line4) = round(lab, "clients4", go, 1)
        let (ok6, line6) = round(lab, "clients6", go, 1)
        print("handover: idle connections after it: \(line4) \(line6)")
        #expect(ok4 == 300 && ok6 == 100, "\(line4)\n\(line6)\n\(context())")
        requests.waitUntilExit()
        let after = served()
        print("handover: connections counted for \(Lab.vip):80: \(before) before, \(after) after")
        #expect(before > 100 && after >= before, "\(context())")
        let codes = lab.logText("requests").split(separator: "\n")
        print("handover: \(codes.filter { $0 == "200" }.count) of \(codes.count) new requests answered")
        #expect(codes.count == 400 && codes.allSatisfy { $0 == "200" }, "\(Dictionary(codes.map { ($0, 1) }, uniquingKeysWith: +))\n\(context())")
        streamsWentOn(lab, streams, "handover", context: context)

        // SIGUSR2: lvsd starts its own binary again with --takeover (the upgrade the systemd unit names).
        new.signal(SIGUSR2)
        new.waitUntilExit()
        let successor = lab.logText("lvsd").split(separator: "\n").last { $0.contains("started to take over (pid ") }
            .flatMap { Int32($0.split(separator: "(pid ").last!.dropLast()) }
        defer { if let successor { kill(successor, SIGTERM) } }
        #expect(
            successor != nil && waitFor(limit: 10) { lab.logText("lvsd").split(separator: "\n").filter { $0.contains("took over") }.count == 2 } != nil,
            "\(context())")
        let (again4, line) = round(lab, "clients4", go, 2)
        print("handover: idle connections after SIGUSR2: \(line)")
        #expect(again4 == 300, "\(line)\n\(context())")
        _ = FileManager.default.createFile(atPath: go + ".end", contents: nil)
        if let successor {
            kill(successor, SIGTERM)
            _ = waitFor(limit: 10) { kill(successor, 0) != 0 }
        }
    }

    /// DR and TUN: a restarted lvsd without the state would schedule the
    /// connections' next packets afresh (rr) or drop them as mid-flow.
    @Test func directRoutingAndTunnelConnectionsOutliveAKill() throws {
        let lab = try Lab(prefix: "ltcd", bin: Self.bin)
        defer { lab.teardown() }
        let dr = "198.19.2.10"
        let tun = "198.19.2.11"
        var text = ""
        for (vip, method, port) in [(dr, "-g", 5201), (tun, "-i", 5202)] {
            text += "-A -t \(vip):80 -s rr\n-A -t \(vip):\(port) -s sh\n"
            for i in 1...3 { text += "-a -t \(vip):80 -r \(Lab.real(i)) \(method)\n-a -t \(vip):\(port) -r \(Lab.real(i)) \(method)\n" }
        }
        let rules = lab.directory.appendingPathComponent("rules").path
        try text.write(toFile: rules, atomically: true, encoding: .utf8)
        try lab.gateway(viaDirector: false)
        try lab.startNginx(keepalive: 300)
        for i in 1...3 {
            try lab.inside("r\(i)", Self.bin.appendingPathComponent("lvs-realserver").path, "dr-setup", dr)
            try lab.start("r\(i)", [Self.bin.appendingPathComponent("lvs-realserver").path, "tunnel", tun], logName: "tunnel\(i)")
            for port in [5201, 5202] { try lab.start("r\(i)", ["iperf3", "-s", "-p", "\(port)"], logName: "iperf3-server\(i)-\(port)") }
        }
        try lab.inside("rt", "ip", "route", "add", "198.19.2.0/24", "via", Lab.director)
        var lvsd = try lab.startDirector(extra: ["--rules", rules])
        let context = { "--- lvsd ---\n\(lab.logText("lvsd"))" }
        #expect(waitFor(limit: 10) { lab.listening("r3", port: 5201) && lab.listening("r3", port: 5202) } != nil)

        let go = lab.directory.appendingPathComponent("go").path
        try lab.start(
            "c", ["/usr/bin/python3", Self.scripts.appendingPathComponent("many_clients.py").path, go, "150", Lab.client, "\(dr):80", "\(tun):80"],
            logName: "clients")
        #expect(waitFor(limit: 60) { lab.logText("clients").contains("ready") } != nil, "\(lab.logText("clients"))\n\(context())")
        var streams: [(String, RunningProcess)] = []
        for (name, vip, port) in [("DR", dr, 5201), ("TUN", tun, 5202)] {
            streams.append(
                (name, try lab.start("c", ["iperf3", "-c", vip, "-p", "\(port)", "-t", "10", "-b", "100M", "-i", "0.1", "--json"], logName: "iperf3-\(name)")))
        }
        usleep(3_000_000)
        kill(lvsd.processIdentifier, SIGKILL)
        lvsd.waitUntilExit()
        lvsd = try lab.startDirector(extra: ["--rules", rules])
        print("restart: \(lab.logText("lvsd").split(separator: "\n").last { $0.contains("connections restored") } ?? "nothing restored")")
        let (ok, line) = round(lab, "clients", go, 1)
        print("restart: DR and TUN after the kill: \(line)")
        #expect(ok == 300, "\(line)\n\(context())")
        // And handed over to a new lvsd while the streams run.
        let next = try lab.takeOver(extra: ["--rules", rules], logName: "lvsd-next")
        lvsd.waitUntilExit()
        let (again, line2) = round(lab, "clients", go, 2)
        print("restart: DR and TUN after a handover: \(line2)")
        #expect(again == 300 && next.isRunning, "\(line2)\n\(context())\n\(lab.logText("lvsd-next"))")
        streamsWentOn(lab, streams, "restart", context: context)
        _ = FileManager.default.createFile(atPath: go + ".end", contents: nil)
    }
}
