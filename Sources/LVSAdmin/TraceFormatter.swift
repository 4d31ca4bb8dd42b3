import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSPacket
import LVSSystem

#if canImport(Glibc)
import Glibc
#endif

/// The named header fields of a captured frame, in wire order, so that a
/// frame before and after can be compared field by field.
public enum FrameFields {
    public typealias Field = (name: String, value: String)

    /// `tunnelled`: the frame may carry an IPIP, IPv6-in-IP or GUE packet
    /// (a TUN real server's); the outer headers are named `outer.…`.
    public static func describe(_ bytes: [UInt8], tunnelled: Bool = false) -> (fields: [Field], error: String?) {
        var fields: [Field] = []
        let span = bytes.span
        guard bytes.count >= HeaderLength.ethernet else { return (fields, "truncated-ethernet") }
        fields.append(("eth.dst", MACAddress(span, at: 0).description))
        fields.append(("eth.src", MACAddress(span, at: 6).description))
        var type = span.be16(at: 12)
        var l3 = HeaderLength.ethernet
        if type == EtherType.vlan {
            guard bytes.count >= 18 else { return (fields, "truncated-vlan") }
            fields.append(("vlan", "\(span.be16(at: 14) & 0x0FFF)"))
            type = span.be16(at: 16)
            l3 = 18
        }
        switch type {
        case EtherType.arp:
            guard bytes.count >= l3 + HeaderLength.arp else { return (fields, "truncated-arp") }
            fields.append(("arp.op", span.be16(at: l3 + 6) == 1 ? "request" : "reply"))
            fields.append(("arp.sender", "\(IPv4Address(span, at: l3 + 14)) \(MACAddress(span, at: l3 + 8))"))
            fields.append(("arp.target", "\(IPv4Address(span, at: l3 + 24)) \(MACAddress(span, at: l3 + 18))"))
            return (fields, nil)
        case EtherType.ipv4, EtherType.ipv6:
            var p = ParsedPacket()
            p.etherType = type
            p.l3Offset = l3
            do {
                // Lenient: the capture may end before the datagram does.
                try PacketParser.parseIP(span, into: &p, limit: bytes.count, quoted: true)
            } catch {
                return (fields, error.description)
            }
            var inner = p
            var prefix = ""
            if tunnelled, let i = innerPacket(span, p, limit: bytes.count) {
                ip(span, p, prefix: "outer.", into: &fields)
                if p.proto == IPProtocolNumber.udp { transport(span, p, prefix: "outer.", into: &fields) }
                inner = i
                prefix = ""
            }
            ip(span, inner, prefix: prefix, into: &fields)
            transport(span, inner, prefix: prefix, into: &fields)
            return (fields, nil)
        default:
            fields.append(("eth.type", hex(type, 4)))
            return (fields, nil)
        }
    }

    static func innerPacket(_ span: Span<UInt8>, _ p: ParsedPacket, limit: Int) -> ParsedPacket? {
        var innerL3 = p.l4Offset
        var proto = p.proto
        if p.proto == IPProtocolNumber.udp {
            let g = p.l4Offset + HeaderLength.udp
            guard limit - g >= HeaderLength.gue, span[g] >> 6 == 0 else { return nil }
            proto = span[g + 1]
            innerL3 = g + HeaderLength.gue + Int(span[g] & 0x1F) * 4
        }
        guard proto == IPProtocolNumber.ipip || proto == IPProtocolNumber.ipv6 else { return nil }
        var inner = ParsedPacket()
        inner.l3Offset = innerL3
        inner.etherType = proto == IPProtocolNumber.ipip ? EtherType.ipv4 : EtherType.ipv6
        do { try PacketParser.parseIP(span, into: &inner, limit: limit, quoted: true) } catch { return nil }
        return inner
    }

    static func ip(_ s: Span<UInt8>, _ p: ParsedPacket, prefix: String, into f: inout [Field]) {
        let l3 = p.l3Offset
        if p.isIPv4 {
            f.append((prefix + "ip.src", IPv4Address(s, at: l3 + 12).description))
            f.append((prefix + "ip.dst", IPv4Address(s, at: l3 + 16).description))
            f.append((prefix + "ip.ttl", "\(s[l3 + 8])"))
            f.append((prefix + "ip.proto", "\(s[l3 + 9])"))
            f.append((prefix + "ip.len", "\(s.be16(at: l3 + 2))"))
            f.append((prefix + "ip.id", "\(s.be16(at: l3 + 4))"))
            let frag = s.be16(at: l3 + 6)
            if frag & 0x3FFF != 0 { f.append((prefix + "ip.frag", "offset \((frag & 0x1FFF) * 8)\(frag & 0x2000 != 0 ? " MF" : "")")) }
            f.append((prefix + "ip.checksum", hex(s.be16(at: l3 + 10), 4)))
        } else {
            f.append((prefix + "ip.src", IPv6Address(s, at: l3 + 8).description))
            f.append((prefix + "ip.dst", IPv6Address(s, at: l3 + 24).description))
            f.append((prefix + "ip.hlim", "\(s[l3 + 7])"))
            f.append((prefix + "ip.next", "\(p.proto)"))
            f.append((prefix + "ip.plen", "\(s.be16(at: l3 + 4))"))
            if p.fragment != .none { f.append((prefix + "ip.frag", "\(p.fragment)")) }
        }
    }

    static func transport(_ s: Span<UInt8>, _ p: ParsedPacket, prefix: String, into f: inout [Field]) {
        guard p.fragment != .subsequent else { return }
        let l4 = p.l4Offset
        switch p.proto {
        case IPProtocolNumber.tcp where s.count >= l4 + HeaderLength.tcp:
            f.append((prefix + "tcp.sport", "\(s.be16(at: l4))"))
            f.append((prefix + "tcp.dport", "\(s.be16(at: l4 + 2))"))
            f.append((prefix + "tcp.flags", flags(s[l4 + 13])))
            f.append((prefix + "tcp.seq", "\(s.be32(at: l4 + 4))"))
            f.append((prefix + "tcp.ack", "\(s.be32(at: l4 + 8))"))
            f.append((prefix + "tcp.window", "\(s.be16(at: l4 + 14))"))
            f.append((prefix + "tcp.doff", "\(Int(s[l4 + 12] >> 4) * 4)"))
            f.append((prefix + "tcp.checksum", hex(s.be16(at: l4 + 16), 4)))
            options(s, from: l4 + HeaderLength.tcp, to: min(l4 + Int(s[l4 + 12] >> 4) * 4, s.count), prefix: prefix, into: &f)
        case IPProtocolNumber.udp where s.count >= l4 + HeaderLength.udp:
            f.append((prefix + "udp.sport", "\(s.be16(at: l4))"))
            f.append((prefix + "udp.dport", "\(s.be16(at: l4 + 2))"))
            f.append((prefix + "udp.len", "\(s.be16(at: l4 + 4))"))
            f.append((prefix + "udp.checksum", hex(s.be16(at: l4 + 6), 4)))
        case IPProtocolNumber.icmp, IPProtocolNumber.icmpv6:
            guard s.count >= l4 + 4 else { return }
            let name = p.proto == IPProtocolNumber.icmp ? "icmp" : "icmp6"
            f.append((prefix + name + ".type", "\(s[l4])"))
            f.append((prefix + name + ".code", "\(s[l4 + 1])"))
            f.append((prefix + name + ".checksum", hex(s.be16(at: l4 + 2), 4)))
        default:
            return
        }
    }

    static func options(_ s: Span<UInt8>, from start: Int, to end: Int, prefix: String, into f: inout [Field]) {
        var kinds: [String] = []
        var k = start
        while k < end {
            let kind = s[k]
            if kind == 0 {
                kinds.append("eol")
                break
            }
            if kind == 1 {
                kinds.append("nop")
                k += 1
                continue
            }
            guard k + 1 < end, s[k + 1] >= 2, k + Int(s[k + 1]) <= end else {
                kinds.append("bad")
                break
            }
            let len = Int(s[k + 1])
            switch kind {
            case TCPOptionEditor.mssKind where len == 4:
                kinds.append("mss")
                f.append((prefix + "tcp.mss", "\(s.be16(at: k + 2))"))
            case TCPOptionEditor.toaKind where len == 8:
                kinds.append("toa")
                f.append((prefix + "tcp.toa", "\(IPv4Address(s, at: k + 4)):\(s.be16(at: k + 2))"))
            case TCPOptionEditor.toaKind where len == 20:
                kinds.append("toa")
                f.append((prefix + "tcp.toa", "[\(IPv6Address(s, at: k + 4))]:\(s.be16(at: k + 2))"))
            case 3: kinds.append("wscale")
            case 4: kinds.append("sackOK")
            case TCPOptionEditor.sackKind: kinds.append("sack")
            case TCPOptionEditor.timestampKind: kinds.append("ts")
            default: kinds.append("\(kind)")
            }
            k += len
        }
        if !kinds.isEmpty { f.append((prefix + "tcp.options", kinds.joined(separator: ","))) }
    }

    static func flags(_ b: UInt8) -> String {
        let names: [(UInt8, String)] = [
            (TCPFlags.syn, "S"), (TCPFlags.fin, "F"), (TCPFlags.rst, "R"), (TCPFlags.psh, "P"),
            (TCPFlags.ack, "."), (TCPFlags.urg, "U"),
        ]
        let s = names.filter { b & $0.0 != 0 }.map(\.1).joined()
        return s.isEmpty ? "none" : s
    }

    static func hex<T: BinaryInteger>(_ v: T, _ width: Int) -> String {
        let s = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, width - s.count)) + s
    }

    /// Fields that differ, appear or disappear from `before` to `after`,
    /// in the order of `after` (then the removed ones).
    public static func changes(_ before: [Field], _ after: [Field]) -> [(name: String, before: String?, after: String?)] {
        var old: [String: String] = [:]
        for f in before { old[f.name] = f.value }
        var out: [(name: String, before: String?, after: String?)] = []
        var seen = Set<String>()
        for f in after {
            seen.insert(f.name)
            if old[f.name] != f.value { out.append((f.name, old[f.name], f.value)) }
        }
        for f in before where !seen.contains(f.name) { out.append((f.name, f.value, nil)) }
        return out
    }
}

/// lvsadm's rendering of a traced packet.
public enum TraceFormatter {
    public static func format(_ e: TraceEntry) -> String {
        var out = "\(timestamp(e.time)) worker \(e.worker) in if\(e.interface)"
        let before = FrameFields.describe(e.before)
        out += " " + headline(before.fields) + "\n"
        out += "  verdict  " + verdictLine(e) + "\n"
        if let why = decisionLine(e) { out += "  why      " + why + "\n" }
        out += "  before   " + summary(before, length: e.beforeLength) + "\n"
        guard e.verdict == "transmit" else { return out }
        let after = FrameFields.describe(e.after, tunnelled: e.method == .tunnel)
        out += "  after    " + summary(after, length: e.afterLength) + "\n"
        let changes = FrameFields.changes(before.fields, after.fields)
        let width = changes.map(\.name.count).max() ?? 0
        for (i, c) in changes.enumerated() {
            let name = c.name + String(repeating: " ", count: width - c.name.count)
            out += (i == 0 ? "  changed  " : "           ") + "\(name)  \(c.before ?? "-") -> \(c.after ?? "-")\n"
        }
        if changes.isEmpty { out += "  changed  nothing\n" }
        return out
    }

    static func verdictLine(_ e: TraceEntry) -> String {
        switch e.verdict {
        case "transmit": "sent out if\(e.outInterface ?? 0)"
        case "drop": "dropped: \(e.dropReason ?? "?")"
        case "held": "held until the real server completes the SYN proxy's handshake"
        default: "passed to the kernel (not lvsd's)"
        }
    }

    static func decisionLine(_ e: TraceEntry) -> String? {
        guard let service = e.service else { return nil }
        var s = "service \(service.description.split(separator: " ").joined(separator: " "))"
        let real = e.realServer.map { a in a.isIPv6 ? "[\(a)]:\(e.realPort ?? 0)" : "\(a):\(e.realPort ?? 0)" } ?? "?"
        let method = e.method.map { " (\($0.label))" } ?? ""
        switch e.decision {
        case "scheduled": s += ", new connection: \(e.scheduler ?? "?") chose \(real)\(method)"
        case "persistent": s += ", new connection: persistence template chose \(real)\(method)"
        case "existing": s += ", existing connection to \(real)\(method)"
        case "reply": s += ", reply from \(real)\(method) of an existing connection"
        case "reply-taken": s += ", reply from \(real)\(method) of a connection begun at another director: connection made"
        default: s += ", \(real)\(method)"
        }
        if let state = e.state { s += ", state \(state)" }
        return s
    }

    static func headline(_ f: [FrameFields.Field]) -> String {
        let d = Dictionary(f.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        guard let src = d["ip.src"], let dst = d["ip.dst"] else {
            if let op = d["arp.op"] { return "ARP \(op) \(d["arp.sender"] ?? "") -> \(d["arp.target"] ?? "")" }
            return "non-IP frame"
        }
        func host(_ a: String) -> String { a.contains(":") ? "[\(a)]" : a }
        if let sp = d["tcp.sport"], let dp = d["tcp.dport"] { return "TCP \(host(src)):\(sp) -> \(host(dst)):\(dp) [\(d["tcp.flags"] ?? "")]" }
        if let sp = d["udp.sport"], let dp = d["udp.dport"] { return "UDP \(host(src)):\(sp) -> \(host(dst)):\(dp)" }
        return "IP \(src) -> \(dst) proto \(d["ip.proto"] ?? d["ip.next"] ?? "?")"
    }

    static func summary(_ d: (fields: [FrameFields.Field], error: String?), length: Int) -> String {
        var parts = ["\(length) bytes"]
        parts += d.fields.filter { !$0.name.hasSuffix("checksum") }.map { "\($0.name)=\($0.value)" }
        if let e = d.error { parts.append("malformed: \(e)") }
        return parts.joined(separator: " ")
    }

    static func timestamp(_ micros: UInt64) -> String {
        let time = WallClock.localTimeOfDay(Int64(micros / 1_000_000))
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let us = String(micros % 1_000_000)
        return "\(two(time.hour)):\(two(time.minute)):\(two(time.second)).\(String(repeating: "0", count: 6 - us.count))\(us)"
    }
}
