import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// FTP through a NAT service with real vsftpd servers and curl: the data
/// connections of every mode curl speaks (EPSV, PASV, EPRT, PORT) reach the
/// server their control connection chose, and files arrive byte for byte.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct FTPEndToEndTests {
    static let bin = Executables.directory

    @Test func everyModeCarriesAFileThroughNAT() throws {
        let lab = try Lab(prefix: "ltftp", bin: Self.bin)
        defer { lab.teardown() }
        do {
            try lab.startDirector()
            try lab.gateway(viaDirector: true)
            var digests: [String: String] = [:]
            for i in 1...3 {
                let dir = lab.directory.appendingPathComponent("ftp\(i)")
                let root = dir.appendingPathComponent("root")
                try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
                try FileManager.default.createDirectory(at: dir.appendingPathComponent("empty"), withIntermediateDirectories: true)
                let (file, digest) = try lab.randomFile("ftp\(i)/root/file", megabytes: 2)
                _ = file
                digests["rs\(i)"] = digest
                try "rs\(i)\n".write(to: root.appendingPathComponent("name"), atomically: true, encoding: .utf8)
                let conf = """
                    listen=NO
                    listen_ipv6=YES
                    background=NO
                    anonymous_enable=YES
                    no_anon_password=YES
                    anon_root=\(root.path)
                    local_enable=NO
                    write_enable=NO
                    pasv_enable=YES
                    pasv_min_port=50000
                    pasv_max_port=50999
                    port_enable=YES
                    connect_from_port_20=YES
                    secure_chroot_dir=\(dir.appendingPathComponent("empty").path)
                    seccomp_sandbox=NO
                    xferlog_enable=NO
                    vsftpd_log_file=\(dir.appendingPathComponent("vsftpd.log").path)

                    """
                try conf.write(to: dir.appendingPathComponent("vsftpd.conf"), atomically: true, encoding: .utf8)
                try lab.start("r\(i)", ["vsftpd", dir.appendingPathComponent("vsftpd.conf").path], logName: "vsftpd\(i)")
            }
            for i in 1...3 { #expect(lab.listening("r\(i)", port: 21), "vsftpd on rs\(i): \(lab.logText("vsftpd\(i)"))") }
            for (vip, modes) in [
                (Lab.vip, [[], ["--disable-epsv"], ["-P", "-"], ["-P", "-", "--disable-eprt"]]),
                ("[\(Lab.vip6)]", [[], ["-P", "-"]]),
            ] {
                try lab.lvsadm("-C")
                try lab.lvsadm("-A -t \(vip):21 -s rr")
                for i in 1...3 { try lab.lvsadm("-a -t \(vip):21 -r \(vip == Lab.vip ? Lab.real(i) : "[\(Lab.real6(i))]"):21 -m") }
                for mode in modes {
                    for _ in 0..<3 {
                        // One control connection: which server it reached, then that server's file through a data connection.
                        let out = try lab.inside(
                            "c",
                            arguments: ["curl", "-sS", "-g", "--max-time", "30"] + mode + [
                                "ftp://\(vip)/name", "-o", "-", "ftp://\(vip)/file", "-o", lab.directory.appendingPathComponent("got").path,
                            ])
                        let name = out.trimmingCharacters(in: .whitespacesAndNewlines)
                        let got = String(try Lab.exec(["sha256sum", lab.directory.appendingPathComponent("got").path]).prefix(64))
                        #expect(digests[name] != nil && got == digests[name], "\(vip) \(mode): \(name) sent \(got)")
                    }
                    // The data connections went through lvsd: to VIP:port in passive modes, from VIP:20 in active ones.
                    let plain = vip.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
                    let conns = try lab.lvsadm("-L -n -c")
                    let data = mode.contains("-P") ? conns.contains("\(vip):20 ") : conns.contains(try Regex("\\Q\(vip)\\E:50[0-9]{3} "))
                    #expect(data, "\(plain) \(mode): \(conns)")
                }
            }
        } catch {
            Issue.record("\(error)\n--- lvsd ---\n\(lab.logText("lvsd"))")
        }
    }
}
