import Foundation
import LVSLab
import LVSSystem
import LVSTestSupport
import Testing

/// FTP through NAT and FULLNAT services with real vsftpd servers and curl:
/// the data connections of every mode curl speaks (EPSV, PASV, EPRT, PORT;
/// IPv4 and IPv6) reach the server their control connection chose, and
/// 10 MB go each way byte for byte.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces"))
struct FTPEndToEndTests {
    static let bin = Executables.directory

    @Test func everyModeCarriesFilesBothWaysThroughNATAndFullNAT() throws {
        let lab = try Lab(prefix: "ltftp", bin: Self.bin)
        defer { lab.teardown() }
        do {
            try lab.startDirector()
            try lab.gateway(viaDirector: true)
            var digests: [String: String] = [:]
            for i in 1...3 {
                let dir = lab.directory.appendingPathComponent("ftp\(i)")
                let root = dir.appendingPathComponent("root")
                let incoming = root.appendingPathComponent("incoming")
                try FileManager.default.createDirectory(at: incoming, withIntermediateDirectories: true)
                try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: incoming.path)
                try FileManager.default.createDirectory(at: dir.appendingPathComponent("empty"), withIntermediateDirectories: true)
                digests["rs\(i)"] = try lab.randomFile("ftp\(i)/root/file", megabytes: 10).sha256
                try "rs\(i)\n".write(to: root.appendingPathComponent("name"), atomically: true, encoding: .utf8)
                let conf = """
                    listen=NO
                    listen_ipv6=YES
                    background=NO
                    anonymous_enable=YES
                    no_anon_password=YES
                    anon_root=\(root.path)
                    local_enable=NO
                    write_enable=YES
                    anon_upload_enable=YES
                    anon_umask=022
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
            let upload = try lab.randomFile("upload", megabytes: 10)
            var uploads = 0
            for method in ["-m", "-b"] {
                for (vip, modes) in [
                    (Lab.vip, [[], ["--disable-epsv"], ["-P", "-"], ["-P", "-", "--disable-eprt"]]),
                    ("[\(Lab.vip6)]", [[], ["-P", "-"]]),
                ] {
                    let v6 = vip != Lab.vip
                    try lab.lvsadm("-C")
                    // FULLNAT persistent: the data connections hang off a control connection a template holds.
                    try lab.lvsadm("-A -t \(vip):21 -s rr" + (method == "-b" ? " -p 30" : ""))
                    if method == "-b" { try lab.lvsadm("--add-laddr -t \(vip):21 -z \(v6 ? "[\(Lab.lip6)]" : Lab.lip)") }
                    for i in 1...3 { try lab.lvsadm("-a -t \(vip):21 -r \(v6 ? "[\(Lab.real6(i))]" : Lab.real(i)):21 \(method)") }
                    for mode in modes {
                        let what = "\(method) \(vip) \(mode)"
                        // One control connection: which server it reached, then that server's file through a data connection.
                        let got = lab.directory.appendingPathComponent("got").path
                        try? FileManager.default.removeItem(atPath: got)
                        let out = try lab.inside(
                            "c",
                            arguments: ["curl", "-sS", "-g", "--max-time", "60"] + mode + ["ftp://\(vip)/name", "-o", "-", "ftp://\(vip)/file", "-o", got])
                        let name = out.trimmingCharacters(in: .whitespacesAndNewlines)
                        let digest = String(try Lab.exec(["sha256sum", got]).prefix(64))
                        #expect(digests[name] != nil && digest == digests[name], "\(what): \(name) sent \(digest)")
                        // 10 MB up, found whole on the server the upload's control connection reached.
                        uploads += 1
                        try lab.inside(
                            "c", arguments: ["curl", "-sS", "-g", "--max-time", "60"] + mode + ["-T", upload.path, "ftp://\(vip)/incoming/up\(uploads)"])
                        let stored = (1...3).compactMap { i -> String? in
                            let path = lab.directory.appendingPathComponent("ftp\(i)/root/incoming/up\(uploads)").path
                            return FileManager.default.fileExists(atPath: path) ? String((try? Lab.exec(["sha256sum", path]))?.prefix(64) ?? "") : nil
                        }
                        #expect(stored == [upload.sha256], "\(what): upload stored as \(stored)")
                        // The data connections went through lvsd: to VIP:port in passive modes, from VIP:20 in active ones.
                        let conns = try lab.lvsadm("-L -n -c")
                        let data = mode.contains("-P") ? conns.contains("\(vip):20 ") : conns.contains(try Regex("\\Q\(vip)\\E:50[0-9]{3} "))
                        #expect(data, "\(what): \(conns)")
                    }
                }
            }
        } catch {
            Issue.record("\(error)\n--- lvsd ---\n\(lab.logText("lvsd"))")
        }
    }
}
