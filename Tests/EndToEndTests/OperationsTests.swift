import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// What an operator watches and asks: `lvsadm trace` on live traffic.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct OperationsTests {
    static let bin = Executables.directory

    /// Runs `lvsadm trace ARGS` while `traffic` runs; its output once it has
    /// printed what it was asked for (or waited 10 s).
    func trace(_ lab: Lab, _ args: [String], name: String, traffic: () throws -> Void) throws -> String {
        let p = try lab.start(
            "d", [Self.bin.appendingPathComponent("lvsadm").path, "trace", "--socket", lab.socket, "--wait", "10"] + args,
            logName: name)
        usleep(400_000)  // armed by its first poll
        try traffic()
        let deadline = Date().addingTimeInterval(12)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!p.isRunning && p.terminationStatus == 0, "\(lab.logText(name))")
        return lab.logText(name)
    }

    /// Sends one frame from the router onto the director's LAN, as is.
    func sendRaw(_ lab: Lab, _ frameHex: String) throws {
        let script = """
            import socket, sys
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind(("br0", 0))
            s.send(bytes.fromhex(sys.argv[1]))
            """
        try lab.inside("rt", "python3", "-c", script, frameHex)
    }

    /// A fresh network namespace's lo is down. lvsd's programs (nft here)
    /// must not need it: Foundation's Process did, never saw nft exit, and
    /// lvsd hung on SIGTERM.
    @Test func lvsdStopsAndTakesItsKernelFilterAlongWhereLoopbackIsDown() throws {
        let lab = try Lab(prefix: "ltstop", bin: Self.bin)
        defer { lab.teardown() }
        try lab.inside("d", "ip", "link", "set", "lo", "down")
        let lvsd = try lab.startDirector()
        try lab.lvsadm("-A -t \(Lab.vip):80 -s rr")
        func filtered() throws -> Bool { try lab.inside("d", "nft", "list", "ruleset", "netdev").contains(Lab.vip) }
        let added = Date()
        while try !filtered() && Date().timeIntervalSince(added) < 3 { usleep(10_000) }
        #expect(try filtered(), "\(lab.logText("lvsd"))")
        kill(lvsd.processIdentifier, SIGTERM)
        let stopping = Date()
        while lvsd.isRunning && Date().timeIntervalSince(stopping) < 5 { usleep(10_000) }
        #expect(!lvsd.isRunning, "lvsd still running 5 s after SIGTERM\n\(lab.logText("lvsd"))")
        #expect(try !filtered())
    }

    @Test func traceShowsWhatEachMethodChangesAndWhyAMalformedPacketDropped() throws {
        let lab = try Lab(prefix: "lttrace", bin: Self.bin)
        defer { lab.teardown() }
        try lab.startDirector()
        try lab.startNginx()
        for i in 1...3 {
            try lab.inside("r\(i)", Self.bin.appendingPathComponent("lvs-realserver").path, "dr-setup", Lab.vip)
            try lab.startRealServerTool(i, ["tunnel", Lab.vip], logName: "tun\(i)")
        }
        let rs = "198\\.19\\.0\\.1[123]"
        func service(_ method: String, _ port: Int, rsPort: Int) throws {
            try lab.gateway(viaDirector: method == "-m")
            try lab.lvsadm("-C")
            try lab.lvsadm("-A -t \(Lab.vip):\(port) -s rr")
            if method == "-b" { try lab.lvsadm("--add-laddr -t \(Lab.vip):\(port) -z \(Lab.lip)") }
            for i in 1...3 { try lab.lvsadm("-a -t \(Lab.vip):\(port) -r \(Lab.real(i)):\(rsPort) \(method)") }
        }
        func one(_ url: String) throws { _ = try lab.requests(url, count: 1) }
        func has(_ text: String, _ pattern: String) -> Bool { text.range(of: pattern, options: .regularExpression) != nil }

        try service("-m", 80, rsPort: 8080)
        let nat = try trace(lab, ["-t", "\(Lab.vip):80", "--count", "1"], name: "trace-nat") { try one("http://\(Lab.vip)/") }
        #expect(has(nat, "TCP 198\\.18\\.0\\.100:[0-9]+ -> 198\\.19\\.0\\.10:80 \\[S\\]"), "\(nat)")
        #expect(has(nat, "new connection: rr chose \(rs):8080 \\(Masq\\), state SYN_RECV"), "\(nat)")
        #expect(has(nat, "ip\\.dst +198\\.19\\.0\\.10 -> \(rs)\n") && has(nat, "tcp\\.dport +80 -> 8080\n"), "\(nat)")
        #expect(has(nat, "ip\\.ttl +63 -> 62\n") && has(nat, "eth\\.dst ") && has(nat, "eth\\.src "), "\(nat)")

        try service("-g", 8080, rsPort: 8080)
        let dr = try trace(lab, ["-t", "\(Lab.vip):8080", "--count", "1"], name: "trace-dr") { try one("http://\(Lab.vip):8080/") }
        #expect(has(dr, "chose \(rs):8080 \\(Route\\)") && has(dr, "eth\\.dst +[0-9a-f:]+ -> [0-9a-f:]+\n"), "\(dr)")
        #expect(!has(dr, "ip\\.dst +") && !has(dr, "tcp\\.dport +"), "\(dr)")

        try service("-i", 8080, rsPort: 8080)
        let tun = try trace(lab, ["-t", "\(Lab.vip):8080", "--count", "1"], name: "trace-tun") { try one("http://\(Lab.vip):8080/") }
        #expect(has(tun, "chose \(rs):8080 \\(Tunnel\\)"), "\(tun)")
        #expect(has(tun, "outer\\.ip\\.src +- -> 198\\.19\\.0\\.1\n") && has(tun, "outer\\.ip\\.dst +- -> \(rs)\n"), "\(tun)")
        #expect(has(tun, "outer\\.ip\\.proto +- -> 4\n"), "\(tun)")

        try service("-b", 80, rsPort: 8080)
        // SYN, the real server's SYN-ACK, and the ACK that carries TOA.
        let fnat = try trace(lab, ["-t", "\(Lab.vip):80", "--count", "3"], name: "trace-fnat") { try one("http://\(Lab.vip)/") }
        #expect(has(fnat, "chose \(rs):8080 \\(FullNat\\)"), "\(fnat)")
        #expect(has(fnat, "ip\\.src +198\\.18\\.0\\.100 -> 198\\.19\\.0\\.100\n"), "\(fnat)")
        #expect(has(fnat, "reply from \(rs):8080 \\(FullNat\\) of an existing connection"), "\(fnat)")
        #expect(has(fnat, "tcp\\.mss +1460 -> 1452\n"), "\(fnat)")
        #expect(has(fnat, "tcp\\.toa +- -> 198\\.18\\.0\\.100:[0-9]+\n"), "\(fnat)")

        // An IPv4 header with IHL 3, to the VIP.
        let dmac = try lab.inside("d", "cat", "/sys/class/net/\(lab.ns("d0"))/address").trimmingCharacters(in: .whitespacesAndNewlines)
        let frame =
            dmac.replacingOccurrences(of: ":", with: "") + "020000000001" + "0800"
            + "4300" + "0028" + "0000" + "4000" + "4006" + "0000" + "c6120064" + "c613000a" + String(repeating: "00", count: 20)
        let bad = try trace(lab, ["-t", "\(Lab.vip):80", "--count", "1"], name: "trace-bad") { try sendRaw(lab, frame) }
        #expect(bad.contains("dropped: bad-ihl") && bad.contains("malformed: bad-ihl"), "\(bad)")
    }

    /// `name{labels}` → value, from the Prometheus text format.
    func samples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else { continue }
            out[String(line[..<space])] = v
        }
        return out
    }

    /// Headless chromium inside the director's namespace (where lvsd's
    /// loopback port is): the page's DOM after `ms` of its own time.
    func chromium(_ lab: Lab, _ args: [String], ms: Int = 4000) throws -> String {
        try lab.inside(
            "d",
            arguments: [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                "--user-data-dir=\(lab.directory.path)/chromium", "--virtual-time-budget=\(ms)",
            ] + args)
    }

    @Test func metricsMatchTheListingsAndTheStatusPageShowsLiveRates() throws {
        let lab = try Lab(prefix: "ltmetric", bin: Self.bin)
        defer { lab.teardown() }
        let base = "http://127.0.0.1:19180"
        try lab.startNAT(director: ["--metrics", "127.0.0.1:19180"])
        try lab.lvsadm("-A -t \(Lab.vip):80 -s wrr")
        for i in 1...3 { try lab.lvsadm("-a -t \(Lab.vip):80 -r \(Lab.real(i)):8080 -m -w \(i)") }
        try lab.lvsadm("-A -f 7 -s rr")
        try lab.lvsadm("-a -f 7 -r \(Lab.real(1)):0 -g -w 0")

        // Before traffic: the page renders every service and real server, rates at 0.
        let idle = try chromium(lab, ["--dump-dom", base + "/"], ms: 2500)
        #expect(idle.contains("data-service=\"TCP \(Lab.vip):80\"") && idle.contains("data-service=\"FWM 7\""), "\(idle.prefix(3000))")
        for i in 1...3 { #expect(idle.contains("data-server=\"\(Lab.real(i)):8080\"")) }
        #expect(idle.contains("id=\"total-inpps\" data-value=\"0\""), "\(idle.prefix(3000))")

        // During traffic: the rates the page shows move, and a screenshot.
        let urls = Array(repeating: "http://\(Lab.vip)/", count: 3000)
        let load = try lab.start("c", ["curl", "-sS", "-o", "/dev/null", "--max-time", "60", "-H", "Connection: close"] + urls, logName: "load")
        usleep(2_500_000)
        let busy = try chromium(lab, ["--dump-dom", base + "/"], ms: 2500)
        let shown = busy.range(of: "id=\"total-inpps\" data-value=\"([0-9]+)\"", options: .regularExpression).map { busy[$0] } ?? ""
        let inpps = Int(shown.split(separator: "\"").last ?? "") ?? 0
        #expect(inpps > 0, "\(shown)")
        #expect((Int(busy.range(of: "data-polls=\"[0-9]+\"", options: .regularExpression).map { busy[$0].filter(\.isNumber) } ?? "") ?? 0) >= 2)
        let png = lab.directory.appendingPathComponent("status-page.png").path
        _ = try chromium(lab, ["--screenshot=\(png)", "--window-size=1280,1400", base + "/"], ms: 2500)
        let size = (try? FileManager.default.attributesOfItem(atPath: png)[.size] as? Int) ?? 0
        #expect(size > 20_000, "screenshot \(size) bytes")
        if let docs = ProcessInfo.processInfo.environment["LVS_UPDATE_DOCS"] {
            try? FileManager.default.removeItem(atPath: docs + "/status-page.png")
            try FileManager.default.copyItem(atPath: png, toPath: docs + "/status-page.png")
        }
        let during = samples(try lab.inside("d", "curl", "-sS", base + "/metrics"))
        #expect((during["node_ipvs_incoming_packets_total"] ?? 0) > 0)

        // After it: every series equals what lvsadm lists.
        let deadline = Date().addingTimeInterval(70)
        while load.isRunning && Date() < deadline { usleep(50_000) }
        usleep(700_000)  // past the metrics cache
        let m = samples(try lab.inside("d", "curl", "-sS", base + "/metrics"))
        let stats = try lab.lvsadm("-L -n --stats --exact")
        let listing = try lab.lvsadm("-L -n")
        var service = ""
        var conns = 0.0
        for line in stats.split(separator: "\n").dropFirst(3) {
            let f = line.split(separator: " ")
            if f[0] == "TCP" {
                service = "local_address=\"\(Lab.vip)\",local_port=\"80\",proto=\"TCP\",local_mark=\"\""
                #expect(m["lvsd_service_connections_total{\(service)}"] == Double(f[2]), "\(line)")
                #expect(m["lvsd_service_incoming_packets_total{\(service)}"] == Double(f[3]), "\(line)")
                #expect(m["lvsd_service_outgoing_bytes_total{\(service)}"] == Double(f[6]), "\(line)")
                conns += Double(f[2]) ?? 0
            } else if f[0] == "FWM" {
                service = "local_address=\"\",local_port=\"0\",proto=\"FWM\",local_mark=\"00000007\""
                #expect(m["lvsd_service_connections_total{\(service)}"] == Double(f[2]))
            } else if f[0] == "->" {
                let hostPort = f[1].split(separator: ":")
                let labels = service.replacingOccurrences(of: ",proto=", with: ",remote_address=\"\(hostPort[0])\",remote_port=\"\(hostPort[1])\",proto=")
                let names = [
                    "lvsd_backend_connections_total", "lvsd_backend_incoming_packets_total", "lvsd_backend_outgoing_packets_total",
                    "lvsd_backend_incoming_bytes_total", "lvsd_backend_outgoing_bytes_total",
                ]
                for (k, name) in names.enumerated() { #expect(m["\(name){\(labels)}"] == Double(f[2 + k]), "\(name) \(line)") }
            }
        }
        #expect(conns == 3000 && m["node_ipvs_connections_total"] == conns, "\(stats)")
        for line in listing.split(separator: "\n") where line.hasPrefix("  -> ") && line.contains(":8080") {
            let f = line.split(separator: " ")
            let hostPort = f[1].split(separator: ":")
            let labels =
                "local_address=\"\(Lab.vip)\",local_port=\"80\",remote_address=\"\(hostPort[0])\",remote_port=\"\(hostPort[1])\",proto=\"TCP\",local_mark=\"\""
            #expect(m["node_ipvs_backend_weight{\(labels)}"] == Double(f[3]), "\(line)")
            #expect(m["node_ipvs_backend_connections_active{\(labels)}"] == Double(f[4]), "\(line)")
            #expect(m["node_ipvs_backend_connections_inactive{\(labels)}"] == Double(f[5]), "\(line)")
        }
        #expect(
            m[
                "node_ipvs_backend_weight{local_address=\"\",local_port=\"0\",remote_address=\"\(Lab.real(1))\",remote_port=\"0\",proto=\"FWM\",local_mark=\"00000007\"}"
            ] == 0)
        #expect(m["lvsd_drops_total{reason=\"bad-ihl\"}"] == 0)
        #expect((m["lvsd_connection_table_entries{worker=\"0\",family=\"ipv4\"}"] ?? 0) > 0)
    }
}
