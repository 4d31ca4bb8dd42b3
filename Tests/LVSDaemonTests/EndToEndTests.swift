import Foundation
import LVSTestSupport
import Testing

@testable import LVSAdmin
@testable import LVSConfiguration
@testable import LVSControlProtocol
@testable import LVSDaemon
@testable import LVSSystem

/// lvsd and lvsadm as processes, driven the way a script drives ipvsadm.
@Suite(.serialized) struct EndToEndTests {
    static let bin = Executables.directory

    struct Result {
        var status: Int32
        var out: String
        var err: String
    }

    @discardableResult
    /// Runs one of ours by name, or any program by absolute path.
    static func run(_ tool: String, _ args: [String], input: String? = nil, socket: String) throws -> Result {
        let p = Process()
        p.executableURL = tool.hasPrefix("/") ? URL(fileURLWithPath: tool) : bin.appendingPathComponent(tool)
        p.arguments = args
        p.environment = ["LVSADM_SOCKET": socket, "PATH": "/usr/bin:/bin"]
        let out = Pipe()
        let err = Pipe()
        let inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        try p.run()
        if let input { inp.fileHandleForWriting.write(Data(input.utf8)) }
        try inp.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, out: String(decoding: o, as: UTF8.self), err: String(decoding: e, as: UTF8.self))
    }

    /// A private directory, an lvsd started on a socket in it, stopped at the end.
    final class Daemon {
        let dir: URL
        let socket: String
        let process = Process()
        let log = Pipe()

        init(name: String, arguments: [String] = [], files: [String: String] = [:]) throws {
            dir = URL(fileURLWithPath: "/tmp/lvs-test-\(name)-\(getpid())")
            try? FileManager.default.removeItem(at: dir)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for (file, text) in files { try text.write(to: dir.appendingPathComponent(file), atomically: true, encoding: .utf8) }
            socket = dir.appendingPathComponent("lvsd.sock").path
            process.executableURL = EndToEndTests.bin.appendingPathComponent("lvsd")
            process.arguments = ["--socket", socket, "--connection-table-size", "4096"] + arguments.map { $0.replacingOccurrences(of: "$DIR", with: dir.path) }
            process.standardError = log
            try process.run()
        }

        func waitUntilServing() -> Bool {
            for _ in 0..<200 {
                // The path appears at bind, before listen: serving is when a connection is taken.
                if FileManager.default.fileExists(atPath: socket), (try? ControlConnection.connect(path: socket)) != nil { return true }
                if !process.isRunning { return false }
                usleep(20_000)
            }
            return false
        }

        func stop() -> Int32 {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            process.waitUntilExit()
            try? FileManager.default.removeItem(at: dir)
            return process.terminationStatus
        }

        func lvsadm(_ line: String, input: String? = nil) throws -> Result {
            try EndToEndTests.run("lvsadm", line.isEmpty ? [] : line.split(separator: " ").map(String.init), input: input, socket: socket)
        }
    }

    @Test func noDaemonIsOneClearLine() throws {
        let r = try Self.run("lvsadm", ["-L", "-n"], socket: "/tmp/lvs-test-nodaemon-\(getpid()).sock")
        #expect(r.status == 1)
        #expect(r.err == "lvsadm: cannot reach lvsd at /tmp/lvs-test-nodaemon-\(getpid()).sock: connect: No such file or directory\n")
        #expect(r.out.isEmpty)
    }

    @Test func aScriptDrivesLvsdLikeIpvsadm() throws {
        let d = try Daemon(
            name: "script", arguments: ["--rules", "$DIR/rules"],
            files: ["rules": "-A -t 198.18.0.10:80 -s rr\n-a -t 198.18.0.10:80 -r 198.19.0.2:8080 -m -w 2\n"])
        defer { #expect(d.stop() == 0) }
        try #require(d.waitUntilServing())

        #expect(try d.lvsadm("-S -n").out == "-A -t 198.18.0.10:80 -s rr\n-a -t 198.18.0.10:80 -r 198.19.0.2:8080 -m -w 2\n")
        for line in [
            "-A -u 198.18.0.10:53 -s sh -b sh-port", "-a -u 198.18.0.10:53 -r 198.19.0.3 -g -w 4",
            "-e -t 198.18.0.10:80 -r 198.19.0.2:8080 -m -w 5", "-a -t 198.18.0.10:80 -r 198.19.0.4:8080 -m",
            "-E -t 198.18.0.10:80 -s wlc -p 120", "-d -t 198.18.0.10:80 -r 198.19.0.4:8080", "--set 600 60 120", "-Z",
            "-Z -t 198.18.0.10:80",
        ] {
            let r = try d.lvsadm(line)
            #expect(r.status == 0 && r.err.isEmpty, "\(line): \(r.err)")
        }
        #expect(
            try d.lvsadm("-L -n").out == """
                IP Virtual Server version 1.2.1 (size=4096)
                Prot LocalAddress:Port Scheduler Flags
                  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
                TCP  198.18.0.10:80 wlc persistent 120
                  -> 198.19.0.2:8080              Masq    5      0          0         \n\
                UDP  198.18.0.10:53 sh (sh-port)
                  -> 198.19.0.3:53                Route   4      0          0         \n
                """)
        #expect(try d.lvsadm("-L --timeout").out == "Timeout (tcp tcpfin udp): 600 60 120\n")
        #expect(try d.lvsadm("-L -n -t 198.18.0.10:80 --stats").out.hasPrefix("Prot LocalAddress:Port               Conns"))
        #expect(try d.lvsadm("-L -n -c").out == "IPVS connection entries\npro expire state       source             virtual            destination\n")

        // Save, clear, restore: the same table.
        let saved = try d.lvsadm("-S -n").out
        #expect(try d.lvsadm("-C").status == 0)
        #expect(try d.lvsadm("-S -n").out.isEmpty)
        #expect(try d.lvsadm("-R", input: saved).status == 0)
        #expect(try d.lvsadm("-S -n").out == saved)

        // Refusals carry ipvsadm's words and statuses; nothing changes.
        let exists = try d.lvsadm("-A -t 198.18.0.10:80")
        #expect(exists.status == 255 && exists.err == "Service already exists\n")
        let sched = try d.lvsadm("-A -t 198.18.0.11:80 -s bogus")
        #expect(sched.status == 255 && sched.err == "Scheduler or persistence engine not found\n")
        let weight = try d.lvsadm("-a -t 198.18.0.10:80 -r 198.19.0.9 -w 65536")
        #expect(weight.status == 2 && weight.err == "illegal weight specified\n")
        let none = try d.lvsadm("-L -n -t 198.18.0.99:80")
        #expect(none.status == 1 && none.err == "No such service\n")
        let bad = try d.lvsadm("-R", input: "-A -t 198.18.0.20:80\n-a -t 198.18.0.20:80 -r 198.19.0.2 -w nope\n")
        #expect(bad.status == 2 && bad.err == "illegal weight specified\n")
        #expect(try d.lvsadm("-S -n").out == saved)

        // --json for automation.
        let json = try d.lvsadm("-L -n --json").out
        #expect(json.contains("\"connectionTableSize\" : 4096") && json.contains("\"scheduler\" : \"wlc\""))
    }

    @Test func malformedMessagesGetAnErrorAndTheDaemonKeepsServing() throws {
        let d = try Daemon(name: "malformed")
        defer { #expect(d.stop() == 0) }
        try #require(d.waitUntilServing())
        // Garbage in a frame.
        do {
            let c = try ControlConnection.connect(path: d.socket)
            try c.send([0, 0, 0, 5] + Array("hello".utf8))
            let reply = try c.receiveMessage(limit: 1 << 20)
            guard case .failed(let e) = try ControlProtocol.decode(ControlResponse.self, from: reply) else {
                Issue.record("no error")
                return
            }
            #expect(e.code == "EPROTO")
        }
        // A length far over the limit.
        do {
            let c = try ControlConnection.connect(path: d.socket)
            try c.send([0x7F, 0xFF, 0xFF, 0xFF])
            let reply = try c.receiveMessage(limit: 1 << 20)
            guard case .failed(let e) = try ControlProtocol.decode(ControlResponse.self, from: reply) else {
                Issue.record("no error")
                return
            }
            #expect(e.code == "EMSGSIZE")
        }
        // A client that connects and says nothing, then one that hangs up mid-frame.
        do { _ = try ControlConnection.connect(path: d.socket) }
        do {
            let c = try ControlConnection.connect(path: d.socket)
            try c.send([0, 0, 1, 0, 1, 2])
        }
        #expect(try d.lvsadm("-A -t 198.18.0.10:80").status == 0)
        #expect(try d.lvsadm("-L -n").out.contains("TCP  198.18.0.10:80 wlc\n"))
        // The socket is the owner's only.
        var st = stat()
        stat(d.socket, &st)
        #expect(st.st_mode & 0o777 == 0o600)
    }

    @Test(.enabled(if: getuid() == 0, "needs root to run lvsadm as another user"))
    func otherUsersAreRefusedAndTheDaemonKeepsServing() throws {
        let d = try Daemon(name: "users")
        defer { #expect(d.stop() == 0) }
        try #require(d.waitUntilServing())
        func asNobody() throws -> Result {
            try Self.run(
                "/usr/bin/setpriv",
                [
                    "--reuid=65534", "--regid=65534", "--clear-groups", Self.bin.appendingPathComponent("lvsadm").path,
                    "--socket", d.socket, "-L", "-n",
                ], socket: d.socket)
        }
        // The socket's mode keeps others out…
        let denied = try asNobody()
        #expect(denied.status == 1 && denied.err.contains("Permission denied"), "\(denied)")
        // …and with the mode loosened, lvsd itself refuses them (SO_PEERCRED).
        chmod(d.socket, 0o666)
        let refused = try asNobody()
        #expect(refused.status == 1 && refused.out.isEmpty, "\(refused)")
        chmod(d.socket, 0o600)
        #expect(try d.lvsadm("-A -t 198.18.0.10:80").status == 0)
        #expect(try d.lvsadm("-L -n").out.contains("TCP  198.18.0.10:80 wlc\n"))
    }

    @Test func reloadIsAllOrNothing() throws {
        let d = try Daemon(name: "reload", arguments: ["--rules", "$DIR/rules"], files: ["rules": "-A -t 198.18.0.10:80 -s rr\n"])
        defer { #expect(d.stop() == 0) }
        try #require(d.waitUntilServing())
        let rules = d.dir.appendingPathComponent("rules")
        try "-A -t 198.18.0.10:80 -s rr\n-A -t 198.18.0.11:80 -s bogus\n".write(to: rules, atomically: true, encoding: .utf8)
        kill(d.process.processIdentifier, SIGHUP)
        usleep(300_000)
        #expect(try d.lvsadm("-S -n").out == "-A -t 198.18.0.10:80 -s rr\n")
        try "-A -t 198.18.0.12:80 -s lc\n".write(to: rules, atomically: true, encoding: .utf8)
        kill(d.process.processIdentifier, SIGHUP)
        var out = ""
        for _ in 0..<50 where !out.contains("198.18.0.12") {
            usleep(50_000)
            out = try d.lvsadm("-S -n").out
        }
        #expect(out == "-A -t 198.18.0.12:80 -s lc\n")
    }

    @Test func aBrokenKeepalivedConfStopsTheStartWithFileAndLine() throws {
        let d = try Daemon(
            name: "badconf", arguments: ["--keepalived", "$DIR/keepalived.conf"],
            files: ["keepalived.conf": "virtual_server 198.18.0.10 80 {\n  lb_algo nope\n}\n"])
        for _ in 0..<250 where d.process.isRunning { usleep(20_000) }
        let status = d.stop()
        let log = String(decoding: d.log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(status == 1)
        #expect(log.contains("keepalived.conf:2: lb_algo: unknown scheduler 'nope'"))
    }
}
