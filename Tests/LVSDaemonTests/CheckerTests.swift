import Foundation
import LVSCore
import LVSPacket
import Logging
import NIOPosix
import Testing

@testable import LVSConfiguration
@testable import LVSDaemon
@testable import LVSHealth

/// keepalived's SMTP_CHECK, DNS_CHECK and UDP_CHECK, and `virtualhost`, as
/// lvsd reads them.
@Suite struct MoreCheckersTests {
    @Test func checkersReadAsKeepalivedDefinesThem() throws {
        let text = """
            track_file drain {
                file /run/lvs/drain
                weight 0
            }
            virtual_server 198.18.0.10 80 {
                virtualhost www.example.test
                delay_loop 3
                real_server 198.19.0.2 80 {
                    HTTP_GET {
                        url { path /a }
                        url {
                            path /b
                            virtualhost b.example.test
                        }
                    }
                    SSL_GET {
                        virtualhost tls.example.test
                        enable_sni
                        url { path / }
                    }
                    SMTP_CHECK {
                        connect_port 25
                        helo_name director.example.test
                        host {
                            connect_ip 198.19.0.3
                        }
                        host {
                            connect_ip 198.19.0.4
                            connect_port 2525
                        }
                    }
                    SMTP_CHECK
                    DNS_CHECK {
                        connect_port 53
                        type A
                        name check.example.test
                    }
                    DNS_CHECK
                    UDP_CHECK {
                        connect_port 9
                        payload 00 01 0a
                        require_reply 00xx
                        min_reply_length 2
                    }
                    PING_CHECK {
                        connect_timeout 1
                    }
                    FILE_CHECK {
                        track_file drain
                    }
                    FILE_CHECK {
                        track_file drain
                        weight -5 reverse
                    }
                }
            }
            """
        let config = try KeepalivedConfiguration.parse(text, file: "k")
        let checks = try #require(config.healthTargets(file: "k").first).checks
        #expect(
            checks.map(\.kind.name) == [
                "HTTP_GET", "SSL_GET", "SMTP_CHECK", "SMTP_CHECK", "DNS_CHECK", "DNS_CHECK", "UDP_CHECK", "PING_CHECK", "FILE_CHECK", "FILE_CHECK",
            ])
        #expect(
            checks[0].kind
                == .http([.init(path: "/a", virtualhost: "www.example.test"), .init(path: "/b", virtualhost: "b.example.test")], tls: false))
        #expect(checks[1].kind == .http([.init(path: "/", virtualhost: "tls.example.test")], tls: true) && checks[1].sni && !checks[0].sni)
        #expect(
            checks[2].kind
                == .smtp(
                    helo: "director.example.test",
                    hosts: [.init(address: IPAddress("198.19.0.3")), .init(address: IPAddress("198.19.0.4"), port: 2525)])
                && checks[2].connectPort == 25)
        #expect(checks[3].kind == .smtp(helo: "smtpchecker.keepalived.org", hosts: []))
        #expect(checks[4].kind == .dns(type: 1, name: "check.example.test") && checks[4].retry == 3)
        #expect(checks[5].kind == .dns(type: 6, name: "."))
        #expect(checks[6].kind == .udp(payload: [0, 1, 10], reply: HealthCheck.UDPReply(data: [0, 0], mask: [0, 0xFF], minimum: 2, maximum: 255)))
        #expect(checks[8].kind == .file(path: "/run/lvs/drain", weight: 0, reverse: false) && checks[8].retry == 0)
        #expect(checks[9].kind == .file(path: "/run/lvs/drain", weight: -5, reverse: true))
        #expect(KeepalivedAudit.audit(try KeepalivedConfiguration.tokenizeAndNest(text, file: "k"), file: "k").isEmpty)
        for bad in [
            "FILE_CHECK { track_file none }", "DNS_CHECK { type PTR }", "DNS_CHECK { name a..b }", "UDP_CHECK { payload 0g }",
            "UDP_CHECK { require_reply abc }",
        ] {
            #expect(throws: ConfigurationError.self) {
                try KeepalivedConfiguration.parse("virtual_server 198.18.0.10 80 {\n real_server 198.19.0.2 80 {\n \(bad)\n }\n}\n", file: "k")
                    .healthTargets(file: "k")
            }
        }
    }

    @Test func aBrokenCheckerRefusesTheWholeLoad() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("lvs-checker-\(getpid()).conf")
        defer { try? FileManager.default.removeItem(at: file) }
        try "virtual_server 198.18.0.10 53 {\n protocol UDP\n real_server 198.19.0.2 53 {\n  DNS_CHECK {\n   type PTR\n  }\n }\n}\n"
            .write(to: file, atomically: true, encoding: .utf8)
        let plane = ControlPlane(
            capacity: 64, sources: ConfigurationSources(keepalived: [file.path]), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        #expect(throws: ConfigurationError.self) { try plane.reload() }
        #expect(plane.table.services.isEmpty)
    }

    @Test func httpChecksNameTheirVirtualHost() {
        func host(_ r: [UInt8]) -> String? { String(decoding: r, as: UTF8.self).split(separator: "\r\n").first { $0.hasPrefix("Host: ") }.map(String.init) }
        #expect(host(HTTPProbe.request(IPAddress("198.19.0.2")!, path: "/", host: "www.example.test")) == "Host: www.example.test")
        #expect(host(HTTPProbe.request(IPAddress("198.19.0.2")!, path: "/")) == "Host: 198.19.0.2")
        #expect(host(HTTPProbe.request(IPAddress("2001:db8:1::2")!, path: "/")) == "Host: [2001:db8:1::2]")
    }

    @Test func aFileCheckReadsItsNumber() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lvs-file-check-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let text = "track_file f {\n file \(path)\n}\nvirtual_server 198.18.0.10 80 {\n real_server 198.19.0.2 80 {\n FILE_CHECK {\n track_file f\n }\n }\n}\n"
        let check = try #require(try KeepalivedConfiguration.parse(text, file: "k").healthTargets(file: "k").first?.checks.first)
        func verdict(_ weight: Int, _ reverse: Bool = false) async -> HealthMonitor.Verdict {
            var c = check
            c.kind = .file(path: path, weight: weight, reverse: reverse)
            return await HealthMonitor.run(c, address: IPAddress("198.19.0.2")!, port: 80, weight: 10, group: MultiThreadedEventLoopGroup.singleton)
        }
        #expect(await verdict(0).up)  // no file: 0
        try "3\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(await !verdict(0).up)
        let (up, down, floor) = (await verdict(2), await verdict(2, true), await verdict(-5))
        #expect(up.weight == 16 && down.weight == 4 && floor.weight == 0 && floor.up)
        try "0".write(toFile: path, atomically: true, encoding: .utf8)
        let (zero, same) = (await verdict(0), await verdict(2))
        #expect(zero.up && same.weight == 10)
    }

    @Test func udpRepliesMatchUnderTheirMask() {
        let want = HealthCheck.UDPReply(data: [0xAB, 0x00], mask: [0, 0xFF], minimum: 2, maximum: 4)
        #expect(want.accepts([0xAB, 0x55]) && want.accepts([0xAB, 0, 1, 2]))
        #expect(!want.accepts([0xAC, 0]) && !want.accepts([0xAB]) && !want.accepts([0xAB, 0, 0, 0, 0]))
    }

    @Test func aDNSQueryIsKeepalivedsAndItsAnswerIsTold() {
        let q = DNSProbe.query(id: 0x1234, type: 1, name: "a.test")
        #expect(q == [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 97, 4, 116, 101, 115, 116, 0, 0, 1, 0, 1])
        #expect(DNSProbe.query(id: 1, type: 6, name: ".").suffix(5) == [0, 0, 6, 0, 1])
        var reply = q
        reply[2] |= 0x80
        #expect(DNSProbe.answers(reply, id: 0x1234) && DNSProbe.rcode(reply) == 0 && !DNSProbe.answers(q, id: 0x1234))
        reply[3] = 0x83
        #expect(DNSProbe.rcode(reply) == 3 && !DNSProbe.answers(reply, id: 0x1235))
    }

    @Test func anEchoRequestAndItsReply() {
        let v4 = PingProbe.request(id: 0xBEEF, ipv6: false)
        #expect(v4.prefix(8) == [8, 0, v4[2], v4[3], 0xBE, 0xEF, 0, 1])
        // The checksum makes the ones' complement sum of the message all ones.
        var sum: UInt32 = 0
        for i in stride(from: 0, to: v4.count, by: 2) { sum += UInt32(v4[i]) << 8 | UInt32(i + 1 < v4.count ? v4[i + 1] : 0) }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        #expect(sum == 0xFFFF)
        var reply = [UInt8](repeating: 0, count: 20) + v4
        reply[0] = 0x45
        reply[20] = 0
        #expect(PingProbe.answers(reply, id: 0xBEEF, ipv6: false) && !PingProbe.answers(reply, id: 0xBEEE, ipv6: false))
        #expect(!PingProbe.answers([0x45] + [UInt8](repeating: 0, count: 19) + v4, id: 0xBEEF, ipv6: false))  // the request itself
        var six = PingProbe.request(id: 7, ipv6: true)
        #expect(six[0] == 128 && six[2] == 0 && six[3] == 0)
        six[0] = 129
        #expect(PingProbe.answers(six, id: 7, ipv6: true))
    }

    @Test func anSMTPTranscriptIsJudgedByItsReplyCodes() {
        func verdict(_ s: String) -> String? {
            switch SMTPDialog.verdict(Array(s.utf8)) {
            case .success: nil
            case .failure(let e): e.description
            }
        }
        #expect(verdict("220-mx.test ESMTP\r\n220 ready\r\n250 mx.test\r\n221 bye\r\n") == nil)
        #expect(verdict("554 go away\r\n") == "greeting 554, expected 220")
        #expect(verdict("220 ready\r\n501 syntax\r\n") == "HELO answered 501, expected 250")
        #expect(verdict("220 ready\r\n") == "no answer to HELO")
        #expect(SMTPDialog.replies(Array("250-a\r\n250-b\r\n250 c\r\n".utf8)) == [250])
    }
}
