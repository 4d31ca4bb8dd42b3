import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// lvsd with several workers on veths with four queues, offloads as the
/// kernel sets them: every connection's frames, client side and reply side,
/// meet the worker that owns it (the steering program), in every mode.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct WorkerTests {
    static let bin = Executables.directory

    func spread(_ answers: [String]) -> [String: Int] {
        answers.reduce(into: [:]) { $0[String($1.split(separator: " ")[0]), default: 0] += 1 }
    }

    /// The packets each worker forwarded, from the metrics.
    func forwardedByWorker(_ lab: Lab, port: Int) throws -> [Int: Double] {
        let text = try lab.inside("d", "curl", "-sS", "http://127.0.0.1:\(port)/metrics")
        var out: [Int: Double] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("lvsd_worker_packets_total{") && line.contains("direction=\"in\"") {
            guard let w = line.split(separator: "worker=\"").last?.split(separator: "\"").first.flatMap({ Int($0) }),
                let v = line.split(separator: " ").last.flatMap({ Double($0) })
            else { continue }
            out[w] = v
        }
        return out
    }

    /// AF_XDP: a queue's socket belongs to worker queue mod workers; a frame
    /// another worker owns passes XDP to that worker's AF_PACKET ring.
    @Test(arguments: [("packet", 1), ("packet", 2), ("packet", 4), ("xdp", 1), ("xdp", 2), ("xdp", 4)])
    func everyModeWithWorkersOnFourQueues(io: String, workers: Int) throws {
        let lab = try Lab(prefix: "lw\(io.prefix(1))\(workers)", bin: Self.bin, queues: 4)
        defer { lab.teardown() }
        let metrics = 19190 + workers + (io == "xdp" ? 10 : 0)
        try lab.startDirector(extra: ["--workers", String(workers), "--io", io, "--metrics", "127.0.0.1:\(metrics)"])
        try lab.startNginx()
        do {
            for _ in 0..<100 where !lab.logText("lvsd").contains("workers=") { usleep(20_000) }
            #expect(lab.logText("lvsd").contains("workers=\(workers)") && lab.logText("lvsd").contains("io=\(io)"), "\(lab.logText("lvsd"))")
            // NAT, IPv4 and IPv6: the real servers answer through lvsd.
            try lab.gateway(viaDirector: true)
            try lab.lvsadm("-A -t \(Lab.vip):80 -s rr")
            try lab.lvsadm("-A -t [\(Lab.vip6)]:80 -s rr")
            for i in 1...3 {
                try lab.lvsadm("-a -t \(Lab.vip):80 -r \(Lab.real(i)):8080 -m")
                try lab.lvsadm("-a -t [\(Lab.vip6)]:80 -r [\(Lab.real6(i))]:8080 -m")
            }
            let nat = try lab.requests("http://\(Lab.vip)/", count: 300, parallel: 8)
            #expect(nat.count == 300 && nat.allSatisfy { $0.contains(" \(Lab.client) ") }, "\(nat.count)")
            #expect(spread(nat) == ["rs1": 100, "rs2": 100, "rs3": 100], "\(spread(nat))")
            let nat6 = try lab.requests("http://[\(Lab.vip6)]/", count: 60, parallel: 8)
            #expect(nat6.count == 60 && nat6.allSatisfy { $0.contains(" \(Lab.client6) ") }, "\(nat6.count)")
            // The SYN proxy: each worker answers its clients' handshakes and opens the real server's.
            // After port 80's requests to the same servers: a client port used again may meet a
            // server still holding the old connection in TIME_WAIT, which answers the SYN with an
            // ACK that the director must reset, and a reply tuple that must find the new connection.
            try lab.lvsadm("-A -t \(Lab.vip):82 -s rr -j enable")
            for i in 1...3 { try lab.lvsadm("-a -t \(Lab.vip):82 -r \(Lab.real(i)):8080 -m") }
            let proxied = try lab.requests("http://\(Lab.vip):82/", count: 60, parallel: 8)
            #expect(proxied.count == 60 && spread(proxied) == ["rs1": 20, "rs2": 20, "rs3": 20], "\(spread(proxied))")
            // FULLNAT: replies come back to the local address, to the worker that owns the port;
            // with a PROXY header (8081 is nginx's proxy_protocol listener) the shift lives in that worker's table.
            for (vip, lip, reals, count) in [
                (Lab.vip, Lab.lip, (1...3).map { Lab.real($0) }, 150), ("[\(Lab.vip6)]", Lab.lip6, (1...3).map { "[\(Lab.real6($0))]" }, 60),
            ] {
                try lab.lvsadm("-A -t \(vip):81 -s rr")
                try lab.lvsadm("-A -t \(vip):83 -s rr --proxy-protocol v2")
                for port in [81, 83] {
                    try lab.lvsadm("--add-laddr -t \(vip):\(port) -z \(lip)")
                    for r in reals { try lab.lvsadm("-a -t \(vip):\(port) -r \(r):\(port == 81 ? 8080 : 8081) -b") }
                }
                let full = try lab.requests("http://\(vip):81/", count: count, parallel: 8)
                #expect(full.count == count && full.allSatisfy { $0.contains(" \(lip) ") }, "\(vip): \(full.count)")
                #expect(spread(full) == ["rs1": count / 3, "rs2": count / 3, "rs3": count / 3], "\(vip): \(spread(full))")
                let client = vip == Lab.vip ? Lab.client : Lab.client6
                let headed = try lab.requests("http://\(vip):83/", count: 60, parallel: 8)
                #expect(headed.count == 60 && headed.allSatisfy { $0.contains(" \(client) ") }, "\(vip) PROXY: \(headed.prefix(3))")
            }
            // Bulk downloads through NAT: on AF_PACKET the servers' TSO super-frames go through whole, each from its owner's ring.
            let blob = Data((0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 12) })
            for i in 1...3 {
                let files = lab.directory.appendingPathComponent("nginx\(i)/files")
                try FileManager.default.createDirectory(at: files, withIntermediateDirectories: true)
                try blob.write(to: files.appendingPathComponent("blob"))
            }
            for _ in 0..<3 {
                let size = try lab.inside(
                    "c", "curl", "-sS", "-o", "/dev/null", "--max-time", "20", "-w", "%{size_download}", "http://\(Lab.vip)/files/blob", check: false)
                #expect(size == String(4 << 20), "\(size)")
            }
            let exported = try lab.inside("d", "curl", "-sS", "http://127.0.0.1:\(metrics)/metrics").split(separator: "\n")
            func superFrames(_ path: String) -> Double {
                exported.filter { $0.hasPrefix("lvsd_super_frames_total") && $0.contains("path=\"\(path)\"") }
                    .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
            }
            // XDP sees frames before GRO, and a veth sends an XDP peer no GSO frames: no super-frames there.
            // None is cut: a worker must not take lvsd's own GSO frames, which leave through the qdisc,
            // where a fanout group sees them, for input.
            #expect(io == "xdp" || (superFrames("whole") > 0 && superFrames("cut") == 0), "\(exported.filter { $0.contains("super_frames") })")
            // DR: the replies go around lvsd.
            for i in 1...3 { try lab.inside("r\(i)", Self.bin.appendingPathComponent("lvs-realserver").path, "dr-setup", Lab.vip) }
            try lab.gateway(viaDirector: false)
            try lab.lvsadm("-A -t \(Lab.vip):8080 -s rr")
            for i in 1...3 { try lab.lvsadm("-a -t \(Lab.vip):8080 -r \(Lab.real(i)):8080 -g") }
            let dr = try lab.requests("http://\(Lab.vip):8080/", count: 150, parallel: 8)
            #expect(dr.count == 150 && dr.allSatisfy { $0.contains(" \(Lab.client) ") }, "\(dr.count)")
            // TUN: IPIP to the same servers, which strip it and answer around lvsd.
            for i in 1...3 { try lab.startRealServerTool(i, ["tunnel", Lab.vip], logName: "tun\(i)") }
            for i in 1...3 {
                for _ in 0..<100 where !lab.logText("tun\(i)").contains("decapsulating") { usleep(20_000) }
            }
            try lab.lvsadm("-D -t \(Lab.vip):8080")
            try lab.lvsadm("-A -t \(Lab.vip):8080 -s rr")
            for i in 1...3 { try lab.lvsadm("-a -t \(Lab.vip):8080 -r \(Lab.real(i)):8080 -i") }
            let tun = try lab.requests("http://\(Lab.vip):8080/", count: 150, parallel: 8)
            #expect(tun.count == 150 && tun.allSatisfy { $0.contains(" \(Lab.client) ") }, "\(tun.count)")
            #expect(spread(tun) == ["rs1": 50, "rs2": 50, "rs3": 50], "\(spread(tun))")
            // Every worker took its share.
            usleep(700_000)  // past the metrics cache
            let byWorker = try forwardedByWorker(lab, port: metrics)
            #expect(byWorker.count == workers && byWorker.values.allSatisfy { $0 > 0 }, "\(byWorker)")
        } catch {
            Issue.record("\(error)\n--- lvsd ---\n\(lab.logText("lvsd"))")
        }
    }
}
