/// `lvsadm --compare FILE`: this director's services and real servers
/// against another director's, both as `-S -n` writes them (lvsadm's or
/// ipvsadm's), so that directors behind one ECMP router can be checked
/// to serve alike: `ssh other lvsadm -S -n | lvsadm --compare -`.
public enum FleetComparison {
    struct Service {
        /// The `-A` line's options after the service's address.
        var options: String
        /// Each real server's options, by its `-r` address.
        var servers: [String: String] = [:]
    }

    /// `-S` text as services by their address (`-t 198.18.0.10:80`,
    /// `-f 7 -6`), and its other lines (DPVS's local addresses) as they are.
    static func parse(_ text: String) -> (services: [String: Service], others: Set<String>) {
        var services: [String: Service] = [:]
        var others = Set<String>()
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ").map(String.init)
            guard words.count >= 3, words[0] == "-A" || words[0] == "-a" else {
                if !line.allSatisfy({ $0 == " " || $0 == "\t" }) { others.insert(String(line)) }
                continue
            }
            let keyWidth = words.count > 3 && words[1] == "-f" && words[3] == "-6" ? 3 : 2
            let key = words[1...keyWidth].joined(separator: " ")
            let rest = Array(words[(keyWidth + 1)...])
            if words[0] == "-A" {
                services[key, default: Service(options: "")].options = rest.joined(separator: " ")
            } else if let r = rest.firstIndex(of: "-r"), r + 1 < rest.count {
                services[key, default: Service(options: "")].servers[rest[r + 1]] = (rest[..<r] + rest[(r + 2)...]).joined(separator: " ")
            }
        }
        return (services, others)
    }

    /// Where the two differ, one line each (empty: they serve alike), then
    /// notes on what could still make them choose differently.
    public static func differences(here: String, there: String) -> (differences: [String], notes: [String]) {
        let (a, aOthers) = parse(here)
        let (b, bOthers) = parse(there)
        var out: [String] = []
        var notes: [String] = []
        for key in Set(a.keys).union(b.keys).sorted() {
            guard let x = a[key] else {
                out.append("\(key): only on the other director")
                continue
            }
            guard let y = b[key] else {
                out.append("\(key): only on this director")
                continue
            }
            if x.options != y.options { out.append("\(key): here \"\(x.options)\", there \"\(y.options)\"") }
            for server in Set(x.servers.keys).union(y.servers.keys).sorted() {
                switch (x.servers[server], y.servers[server]) {
                case (nil, _): out.append("\(key) -r \(server): only on the other director")
                case (_, nil): out.append("\(key) -r \(server): only on this director")
                case (let p?, let q?) where p != q: out.append("\(key) -r \(server): here \"\(p)\", there \"\(q)\"")
                default: break
                }
            }
            let words = x.options.split(separator: " ")
            if let s = words.firstIndex(of: "-s"), s + 1 < words.count, words[s + 1] == "mh", !x.options.contains("mh-sorted") {
                notes.append("\(key): mh without mh-sorted: directors that added its real servers in other orders send a flow to different ones")
            }
        }
        for line in aOthers.subtracting(bOthers).sorted() { out.append("\(line): only on this director") }
        for line in bOthers.subtracting(aOthers).sorted() { out.append("\(line): only on the other director") }
        return (out, notes)
    }
}
