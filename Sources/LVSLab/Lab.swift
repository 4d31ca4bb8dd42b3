import Foundation
import LVSSystem
import SystemPackage

/// A test network in namespaces, as the seed's diagrams draw it: a client,
/// a router, and on the router's LAN (a bridge) the director and three real
/// servers. Addresses come from 198.18.0.0/15 and 2001:db8::/32 only, and no
/// route leads out. Everything it makes it removes again, and it kills only
/// the processes it started.
///
///     client 198.18.0.100 ── router ── LAN 198.19.0.0/24 ── director 198.19.0.1 (lvsd)
///     2001:db8::100          .254/.254 2001:db8:1::/64     ├─ rs1 198.19.0.11
///                                                          ├─ rs2 198.19.0.12
///                                                          └─ rs3 198.19.0.13
public final class Lab: @unchecked Sendable {
    public static let vip = "198.19.0.10"
    public static let vip6 = "2001:db8:1::10"
    public static let lip = "198.19.0.100"
    public static let lip6 = "2001:db8:1::100"
    public static let client = "198.18.0.100"
    public static let client6 = "2001:db8::100"
    public static let director = "198.19.0.1"
    public static let director6 = "2001:db8:1::1"
    public static let router = "198.19.0.254"
    public static let router6 = "2001:db8:1::fe"
    public static func real(_ i: Int) -> String { "198.19.0.1\(i)" }
    public static func real6(_ i: Int) -> String { "2001:db8:1::1\(i)" }

    public let prefix: String
    public let directory: URL
    /// Where lvsd, lvsadm and lvs-realserver are.
    public let bin: URL
    public let servers: Int
    /// Receive and transmit queues of every veth.
    public let queues: Int
    public private(set) var started: [RunningProcess] = []
    public private(set) var socket: String
    let log: (String) -> Void

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    public func ns(_ role: String) -> String { prefix + role }

    /// Builds the network. `prefix` keeps names apart (tests use one each).
    public init(prefix: String, bin: URL, servers: Int = 3, queues: Int = 1, log: @escaping (String) -> Void = { _ in }) throws {
        self.prefix = prefix
        self.bin = bin
        self.servers = servers
        self.queues = queues
        self.log = log
        directory = URL(fileURLWithPath: "/tmp/lvs-lab-\(prefix)-\(getpid())")
        socket = directory.appendingPathComponent("lvsd.sock").path
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        Self.removeNamespaces(prefix: prefix, servers: servers)
        do { try build() } catch {
            teardown()
            throw error
        }
    }

    static func removeNamespaces(prefix: String, servers: Int) {
        // "e", "f" and "k": more directors and a keepalived router, when a test adds them.
        for role in ["c", "rt", "d", "e", "f", "k"] + (1...servers).map({ "r\($0)" }) {
            _ = try? Self.exec(["ip", "netns", "del", prefix + role], check: false)
        }
    }

    func build() throws {
        let roles = ["c", "rt", "d"] + (1...servers).map { "r\($0)" }
        for r in roles {
            try ip("netns", "add", ns(r))
            try inside(r, "ip", "link", "set", "lo", "up")
        }
        // Client and router.
        try veth(ns("c0"), in: "c", peer: ns("rc"), in: "rt")
        try address("c", ns("c0"), Self.client + "/24", Self.client6 + "/64")
        try inside("c", "ip", "route", "add", "default", "via", "198.18.0.254")
        try inside("c", "ip", "-6", "route", "add", "default", "via", "2001:db8::fe")
        try address("rt", ns("rc"), "198.18.0.254/24", "2001:db8::fe/64")
        try inside("rt", "ip", "link", "add", "br0", "type", "bridge")
        try address("rt", "br0", Self.router + "/24", Self.router6 + "/64")
        try sysctl("rt", "net.ipv4.ip_forward", "1")
        try sysctl("rt", "net.ipv6.conf.all.forwarding", "1")
        // Director: the kernel must not forward what lvsd forwards.
        try veth(ns("d0"), in: "d", peer: ns("bd"), in: "rt")
        try inside("rt", "ip", "link", "set", ns("bd"), "master", "br0", "up")
        try address("d", ns("d0"), Self.director + "/24", Self.director6 + "/64")
        try inside("d", "ip", "route", "add", "default", "via", Self.router)
        try inside("d", "ip", "-6", "route", "add", "default", "via", Self.router6)
        try sysctl("d", "net.ipv4.ip_forward", "0")
        try sysctl("d", "net.ipv6.conf.all.forwarding", "0")
        for i in 1...servers {
            try veth(ns("r\(i)"), in: "r\(i)", peer: ns("b\(i)"), in: "rt")
            try inside("rt", "ip", "link", "set", ns("b\(i)"), "master", "br0", "up")
            try address("r\(i)", ns("r\(i)"), Self.real(i) + "/24", Self.real6(i) + "/64")
        }
        try gateway(viaDirector: true)
        // Every veth keeps the offloads the kernel gives it (checksum, TSO,
        // GSO, GRO), as a production NIC does: lvsd must take them as they come.
        // Many ports, none reused while in TIME_WAIT: a reused port would meet
        // its old entry in lvsd and go where that went (as in the kernel), which
        // exact distributions must not depend on.
        try sysctl("c", "net.ipv4.tcp_tw_reuse", "0")
        try sysctl("c", "net.ipv4.ip_local_port_range", "10000 65000")
    }

    /// Another host on the LAN (a second director, a keepalived router):
    /// namespace `role` with interface `role`0 at `address`, routed like
    /// the director, forwarding off.
    public func addHost(_ role: String, address v4: String, address6 v6: String) throws {
        try ip("netns", "add", ns(role))
        try inside(role, "ip", "link", "set", "lo", "up")
        try veth(ns(role + "0"), in: role, peer: ns("b" + role), in: "rt")
        try inside("rt", "ip", "link", "set", ns("b" + role), "master", "br0", "up")
        try address(role, ns(role + "0"), v4 + "/24", v6 + "/64")
        try inside(role, "ip", "route", "add", "default", "via", Self.router)
        try sysctl(role, "net.ipv4.ip_forward", "0")
        try sysctl(role, "net.ipv6.conf.all.forwarding", "0")
    }

    /// A veth pair between two namespaces, with the lab's number of queues at both ends.
    func veth(_ name: String, in role: String, peer: String, in peerRole: String) throws {
        let q = ["numtxqueues", String(queues), "numrxqueues", String(queues)]
        _ = try ip(["link", "add", name, "netns", ns(role)] + q + ["type", "veth", "peer", "name", peer, "netns", ns(peerRole)] + q)
    }

    func address(_ role: String, _ link: String, _ v4: String, _ v6: String) throws {
        try inside(role, "ip", "addr", "add", v4, "dev", link)
        try inside(role, "ip", "-6", "addr", "add", v6, "dev", link, "nodad")
        try inside(role, "ip", "link", "set", link, "up")
    }

    func sysctl(_ role: String, _ key: String, _ value: String) throws {
        try inside(role, "sysctl", "-qw", "\(key)=\(value)")
    }

    /// NAT needs the real servers' replies to come back through the
    /// director; DR, TUN and FULLNAT do not.
    public func gateway(viaDirector: Bool) throws {
        for i in 1...servers {
            try inside("r\(i)", "ip", "route", "replace", "default", "via", viaDirector ? Self.director : Self.router)
            try inside("r\(i)", "ip", "-6", "route", "replace", "default", "via", viaDirector ? Self.director6 : Self.router6)
        }
    }

    // MARK: running things

    /// The tools' PATH: the lab runs as root, with the system's tools.
    static let environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]

    /// Runs a tool to its end (at most `timeout` seconds) and returns its
    /// output; with `check`, a failure throws with its standard error,
    /// without, the standard error follows the output.
    @discardableResult
    public static func exec(_ args: [String], input: String? = nil, check: Bool = true, timeout: Double = 900) throws -> String {
        let outcome = ChildProcess.run(
            args[0], Array(args.dropFirst()), input: input ?? "", timeout: timeout,
            options: .init(captureOutput: true, searchPath: true, environment: environment))
        if check && outcome.status != 0 {
            let status = outcome.status.map(String.init) ?? "killed after \(timeout) s"
            throw Failure(description: "\(args.joined(separator: " ")): status \(status): \(outcome.errorOutput)")
        }
        return outcome.output + (check ? "" : outcome.errorOutput)
    }

    @discardableResult
    func ip(_ args: String...) throws -> String { try ip(args) }
    func ip(_ args: [String]) throws -> String { try Self.exec(["ip"] + args) }

    /// Runs a command in a namespace and returns its output.
    @discardableResult
    public func inside(_ role: String, _ args: String..., input: String? = nil, check: Bool = true) throws -> String {
        try Self.exec(["ip", "netns", "exec", ns(role)] + args, input: input, check: check)
    }

    @discardableResult
    public func inside(_ role: String, arguments: [String], input: String? = nil, check: Bool = true) throws -> String {
        try Self.exec(["ip", "netns", "exec", ns(role)] + arguments, input: input, check: check)
    }

    /// Starts a long-running process in a namespace; it is stopped at teardown.
    @discardableResult
    public func start(_ role: String, _ args: [String], logName: String) throws -> RunningProcess {
        let log = directory.appendingPathComponent(logName + ".log").path
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let p = try ChildProcess.spawn(
            "ip", ["netns", "exec", ns(role)] + args, log: FilePath(log),
            options: .init(searchPath: true, environment: Self.environment))
        started.append(p)
        return p
    }

    public func logText(_ name: String) -> String {
        (try? String(contentsOf: directory.appendingPathComponent(name + ".log"), encoding: .utf8)) ?? ""
    }

    /// lvsd on the director's LAN interface (or on another host's: its
    /// control socket is then `socket(for:)`).
    @discardableResult
    public func startDirector(extra: [String] = [], role: String = "d") throws -> RunningProcess {
        let path = socket(for: role)
        try? FileManager.default.removeItem(atPath: path)
        let log = role == "d" ? "lvsd" : "lvsd-" + role
        let p = try start(role, directorArguments(role) + extra, logName: log)
        for _ in 0..<250 {
            if FileManager.default.fileExists(atPath: path) { return p }
            usleep(20_000)
        }
        throw Failure(description: "lvsd did not start: \(logText(log))")
    }

    /// A new lvsd in `role` taking over from the one running there (`--takeover`), with `extra` arguments; not waited for.
    public func takeOver(extra: [String] = [], role: String = "d", logName: String) throws -> RunningProcess {
        try start(role, directorArguments(role) + extra + ["--takeover"], logName: logName)
    }

    func directorArguments(_ role: String) -> [String] {
        [bin.appendingPathComponent("lvsd").path, "--socket", socket(for: role), "--interface", ns(role + "0"), "--connection-table-size", "65536"]
    }

    /// The control socket of the lvsd in namespace `role`.
    public func socket(for role: String) -> String {
        role == "d" ? socket : directory.appendingPathComponent("lvsd-\(role).sock").path
    }

    /// lvsd (with `extra` arguments) and nginx on every real server, the real
    /// servers' replies routed back through lvsd (NAT); returns lvsd's process.
    @discardableResult
    public func startNAT(director extra: [String] = []) throws -> RunningProcess {
        let lvsd = try startDirector(extra: extra)
        try startNginx()
        try gateway(viaDirector: true)
        return lvsd
    }

    /// lvsadm against this lab's lvsd (or the one in `role`); throws with its message on failure.
    @discardableResult
    public func lvsadm(_ line: String, input: String? = nil, role: String = "d") throws -> String {
        try Self.exec([bin.appendingPathComponent("lvsadm").path, "--socket", socket(for: role)] + line.split(separator: " ").map(String.init), input: input)
    }

    /// nginx on every real server: ports 80 and 8080 (and 8443 with TLS, a
    /// self-signed certificate), answering its name and the peer it sees, or
    /// at /static only its name, and at /files/ what lies in `nginxN/files`
    /// (with TLS on 443 and 8443, `rsN tls`)
    /// of the lab's directory; connections kept open `keepalive` seconds.
    /// `accessLog`: each request's `$remote_addr $remote_port` in
    /// `nginxN/access.log`. `cgroups`: server N starts inside the Nth (a
    /// directory of a cgroup v2 hierarchy the namespaces can see).
    public func startNginx(keepalive: Int = 0, tls: Bool = false, accessLog: Bool = false, cgroups: [String] = []) throws {
        if tls {
            try Self.exec([
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lab",
                "-keyout", directory.appendingPathComponent("key.pem").path, "-out", directory.appendingPathComponent("cert.pem").path,
            ])
        }
        let tlsServer =
            tls
            ? """
                  server {
                    listen 443 ssl; listen 8443 ssl;
                    ssl_certificate \(directory.appendingPathComponent("cert.pem").path);
                    ssl_certificate_key \(directory.appendingPathComponent("key.pem").path);
                    location / { return 200 "rsNAME tls\\n"; }
                  }
            """ : ""
        for i in 1...servers {
            let dir = directory.appendingPathComponent("nginx\(i)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let conf = """
                user root;
                worker_processes 1;
                daemon off;
                pid \(dir.path)/nginx.pid;
                error_log \(dir.path)/error.log;
                events { worker_connections 4096; }
                http {
                  log_format peer '$remote_addr $remote_port';
                  access_log \(accessLog ? "\(dir.path)/access.log peer" : "off");
                  keepalive_timeout \(keepalive);
                  server {
                    listen 80 reuseport; listen 8080; listen [::]:80; listen [::]:8080;
                    location / { return 200 "rs\(i) $remote_addr $remote_port $server_port\\n"; }
                    location /static { return 200 "rs\(i) static\\n"; }
                    location /files/ { alias \(dir.path)/files/; }
                  }
                  # PROXY protocol on 8081 (the client as the header names it); 8091 without, for HAProxy in front.
                  # An upload's body stays in uploads/ (read in full before it is passed to the sink on 8090).
                  log_format proxied '$proxy_protocol_addr $proxy_protocol_port';
                  server {
                    listen 8081 proxy_protocol; listen [::]:8081 proxy_protocol; listen 127.0.0.1:8091;
                    access_log \(dir.path)/proxied.log proxied;
                    location / { return 200 "rs\(i) $proxy_protocol_addr $proxy_protocol_port\\n"; }
                    location /upload {
                      client_body_in_file_only on;
                      client_body_temp_path \(dir.path)/uploads;
                      proxy_pass http://127.0.0.1:8090/;
                    }
                  }
                  server { listen 127.0.0.1:8090; access_log off; location / { return 200 "stored\\n"; } }
                  client_max_body_size 64m;
                \(tlsServer.replacingOccurrences(of: "rsNAME", with: "rs\(i)"))
                }
                """
            try conf.write(to: dir.appendingPathComponent("nginx.conf"), atomically: true, encoding: .utf8)
            let nginx = ["nginx", "-c", dir.appendingPathComponent("nginx.conf").path, "-p", dir.path]
            if i <= cgroups.count {
                try start("r\(i)", ["bash", "-c", "echo $$ > \(cgroups[i - 1])/cgroup.procs && exec \(nginx.joined(separator: " "))"], logName: "nginx\(i)")
            } else {
                try start("r\(i)", nginx, logName: "nginx\(i)")
            }
        }
        for i in 1...servers where !listening("r\(i)", port: 8080) {
            throw Failure(description: "nginx on rs\(i) did not start: \(logText("nginx\(i)"))")
        }
    }

    /// HAProxy on every real server, accepting PROXY protocol (`accept-proxy`)
    /// on 8082: `/` answers `hapN ADDRESS PORT` with the client the header
    /// named, anything else goes to the server's nginx (8091). On 8083, in TCP
    /// mode, it passes connections to a server that speaks first (an SMTP-like
    /// banner on 127.0.0.1:8093, `rsN speaks first`), which HAProxy only
    /// reaches once the header has come.
    public func startHAProxy() throws {
        for i in 1...servers {
            let dir = directory.appendingPathComponent("haproxy\(i)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let conf = """
                global
                  pidfile \(dir.path)/haproxy.pid
                defaults
                  mode http
                  timeout connect 5s
                  timeout client 60s
                  timeout server 60s
                frontend proxied
                  bind :8082 accept-proxy
                  bind :::8082 v6only accept-proxy
                  http-request return status 200 content-type text/plain lf-string "hap\(i) %[src] %[src_port]\\n" if { path / }
                  default_backend nginx
                backend nginx
                  server local 127.0.0.1:8091
                frontend banner
                  mode tcp
                  bind :8083 accept-proxy
                  bind :::8083 v6only accept-proxy
                  default_backend banner
                backend banner
                  mode tcp
                  server local 127.0.0.1:8093

                """
            try conf.write(to: dir.appendingPathComponent("haproxy.cfg"), atomically: true, encoding: .utf8)
            try start("r\(i)", ["haproxy", "-db", "-f", dir.appendingPathComponent("haproxy.cfg").path], logName: "haproxy\(i)")
            let banner = """
                import socket
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", 8093))
                s.listen(128)
                while True:
                    c, _ = s.accept()
                    c.sendall(b"220 rs\(i) speaks first\\r\\n")
                    c.close()
                """
            try start("r\(i)", ["/usr/bin/python3", "-c", banner], logName: "banner\(i)")
        }
        for i in 1...servers where !listening("r\(i)", port: 8082) || !listening("r\(i)", port: 8093) {
            throw Failure(description: "haproxy or the banner on rs\(i) did not start: \(logText("haproxy\(i)")) \(logText("banner\(i)"))")
        }
    }

    /// Whether something in `role`'s namespace listens on TCP `port`, waiting up to 2 s for it.
    public func listening(_ role: String, port: Int) -> Bool {
        for _ in 0..<100 {
            if ((try? inside(role, "ss", "-ltnH", "sport = :\(port)", check: false)) ?? "").contains(":\(port)") { return true }
            usleep(20_000)
        }
        return false
    }

    /// A file of random bytes in the lab's directory, and its SHA-256.
    public func randomFile(_ name: String, megabytes: Int) throws -> (path: String, sha256: String) {
        let path = directory.appendingPathComponent(name).path
        try Self.exec(["dd", "if=/dev/urandom", "of=\(path)", "bs=1M", "count=\(megabytes)", "status=none"])
        return (path, String(try Self.exec(["sha256sum", path]).prefix(64)))
    }

    /// `lvs-realserver` in a real server's namespace, kept running.
    public func startRealServerTool(_ i: Int, _ args: [String], logName: String) throws {
        try start("r\(i)", [bin.appendingPathComponent("lvs-realserver").path] + args, logName: logName)
    }

    /// `count` HTTP requests from the client, each on a new connection, in
    /// one curl; the bodies, one per line.
    /// `count` requests, one connection each, `parallel` at a time; each answer's line.
    public func requests(_ url: String, count: Int, timeout: Int = 5, parallel: Int = 1) throws -> [String] {
        let urls = Array(repeating: url, count: count)
        let out = try inside(
            "c",
            arguments: [
                "curl", "-sS", "-g", "--max-time", String(timeout * 10), "--connect-timeout", String(timeout),
                "-H", "Connection: close",
            ] + (parallel > 1 ? ["--parallel", "--parallel-max", String(parallel)] : []) + urls)
        return out.split(separator: "\n").map(String.init)
    }

    public func teardown() {
        for p in started { p.signal(SIGTERM) }
        for p in started { p.stop(grace: 3) }
        started = []
        Self.removeNamespaces(prefix: prefix, servers: servers)
        try? FileManager.default.removeItem(at: directory)
    }
}
