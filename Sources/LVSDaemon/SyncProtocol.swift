import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSLinux
import LVSPacket
import LVSSystem

/// The IPVS sync protocol on the wire (`ip_vs_sync.c`): version 1 messages
/// out, versions 1 and 0 in. FULLNAT's local address and port travel as an
/// optional parameter (type with `IPVS_OPT_F_PARAM` set), which a kernel
/// backup skips.
public enum SyncProtocol {
    /// MTU 1500 less the IPv4 and UDP headers, the kernel's cap.
    public static let defaultMaxLength = 1472
    static let headerLength = 8
    static let optionalParameter: UInt8 = 0x40
    static let sequenceOption: UInt8 = 1
    static let localAddressOption: UInt8 = optionalParameter | 8

    /// Messages holding `records` in order, none longer than `maxLength`
    /// nor holding more than 255 entries.
    public static func encode(_ records: [SyncRecord], syncID: UInt8, maxLength: Int = defaultMaxLength) -> [[UInt8]] {
        var messages: [[UInt8]] = []
        var m: [UInt8] = []
        var count = 0
        func finish() {
            guard count > 0 else { return }
            m[2] = UInt8(m.count >> 8)
            m[3] = UInt8(m.count & 0xFF)
            m[4] = UInt8(count)
            messages.append(m)
            count = 0
        }
        for r in records {
            let entry = self.entry(r)
            let pad = (4 - m.count % 4) % 4
            if count == 255 || count > 0 && m.count + pad + entry.count > maxLength { finish() }
            if count == 0 {
                m = [0, syncID, 0, 0, 0, 1, 0, 0]
            } else {
                m += [UInt8](repeating: 0, count: (4 - m.count % 4) % 4)
            }
            m += entry
            count += 1
        }
        finish()
        return messages
    }

    static func entry(_ r: SyncRecord) -> [UInt8] {
        let v6 = r.client.isIPv6
        var e: [UInt8] = [v6 ? 1 : 0, r.proto, 0, 0]
        e += be32(r.flags)
        e += be16(r.state) + be16(r.clientPort) + be16(r.virtualPort) + be16(r.realPort)
        e += be32(r.firewallMark) + be32(r.timeout)
        e += r.client.bytes + r.virtual.bytes + r.real.bytes
        if let q = r.sequence, r.flags & SyncConnectionFlags.sequenceMask != 0 {
            e += [sequenceOption, 24]
            for shift in [q.request, q.reply] { e += be32(shift.initial) + be32(shift.delta) + be32(shift.previousDelta) }
        }
        if let local = r.local {
            let a = local.bytes
            e += [localAddressOption, UInt8(a.count + 2)] + a + be16(r.localPort)
        }
        e[2] = UInt8(e.count >> 8 & 0x0F)
        e[3] = UInt8(e.count & 0xFF)
        return e
    }

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case tooShort
        case sizeMismatch(header: Int, received: Int)
        case truncatedEntry(Int)
        case unknownVersion(Int)
        case badOption(Int)
        public var description: String {
            switch self {
            case .tooShort: "message shorter than its header"
            case .sizeMismatch(let h, let r): "header says \(h) bytes, \(r) received"
            case .truncatedEntry(let i): "entry \(i) runs past the message"
            case .unknownVersion(let v): "entry version \(v)"
            case .badOption(let i): "entry \(i) has a malformed option"
            }
        }
    }

    /// The records of one message. Entries the kernel would skip (an
    /// unknown mandatory option, IPv6 in a v0 message) are counted in `skipped`.
    public static func decode(_ b: [UInt8]) throws(DecodeError) -> (syncID: UInt8, records: [SyncRecord], skipped: Int) {
        guard b.count >= 4 else { throw .tooShort }
        let size = Int(be16(b, 2))
        guard size == b.count else { throw .sizeMismatch(header: size, received: b.count) }
        let syncID = b[1]
        guard b[0] == 0, b.count >= headerLength, b[5] == 1, b[6] == 0, b[7] == 0 else { return try decodeV0(b) }
        var records: [SyncRecord] = []
        var skipped = 0
        var p = headerLength
        for i in 0..<Int(b[4]) {
            guard p + 36 <= b.count else { throw .truncatedEntry(i) }
            let verSize = be16(b, p + 2)
            let length = Int(verSize & 0x0FFF)
            guard verSize >> 12 == 0 else { throw .unknownVersion(Int(verSize >> 12)) }
            let end = p + length
            guard end <= b.count else { throw .truncatedEntry(i) }
            let v6 = b[p] & 1 != 0
            guard b[p] & ~1 == 0 else { throw .badOption(i) }
            let alen = v6 ? 16 : 4
            var q = p + 24 + 3 * alen
            guard q <= end else { throw .truncatedEntry(i) }
            func address(_ at: Int) -> IPAddress {
                v6 ? .v6(IPv6Address(Array(b[at..<at + 16]).span, at: 0)) : .v4(IPv4Address(be32(b, at)))
            }
            var r = SyncRecord(
                proto: b[p + 1], flags: be32(b, p + 4) & SyncConnectionFlags.backupMask, state: be16(b, p + 8),
                clientPort: be16(b, p + 10), virtualPort: be16(b, p + 12), realPort: be16(b, p + 14),
                firewallMark: be32(b, p + 16), timeout: be32(b, p + 20),
                client: address(p + 24), virtual: address(p + 24 + alen), real: address(p + 24 + 2 * alen))
            var mandatoryUnknown = false
            while q < end {
                guard q + 2 <= end else { throw .badOption(i) }
                let type = b[q]
                let length = Int(b[q + 1])
                guard length > 0, q + 2 + length <= end else { throw .badOption(i) }
                if type == sequenceOption && length == 24 {
                    func shift(_ at: Int) -> SequenceShift {
                        SequenceShift(initial: be32(b, at), delta: be32(b, at + 4), previousDelta: be32(b, at + 8))
                    }
                    r.sequence = SequenceShifts(request: shift(q + 2), reply: shift(q + 14))
                } else if type == localAddressOption && length == alen + 2 {
                    r.local = address(q + 2)
                    r.localPort = be16(b, q + 2 + alen)
                } else if type & ~optionalParameter > 3 && type & optionalParameter == 0 {
                    mandatoryUnknown = true
                }
                q += 2 + length
            }
            // As the kernel: the flags promise sequence data only when it came.
            if r.sequence == nil { r.flags &= ~SyncConnectionFlags.sequenceMask }
            if mandatoryUnknown { skipped += 1 } else { records.append(r) }
            p += (length + 3) & ~3
        }
        return (syncID, records, skipped)
    }

    /// Version 0: `u8 count | u8 syncid | be16 size`, 24-byte IPv4 entries,
    /// 24 bytes of sequence data after those flagged with it; no timeout.
    static func decodeV0(_ b: [UInt8]) throws(DecodeError) -> (syncID: UInt8, records: [SyncRecord], skipped: Int) {
        var records: [SyncRecord] = []
        var p = 4
        for i in 0..<Int(b[0]) {
            guard p + 24 <= b.count else { throw .truncatedEntry(i) }
            let flags = UInt32(be16(b, p + 20))
            records.append(
                SyncRecord(
                    proto: b[p + 1], flags: flags & SyncConnectionFlags.backupMask, state: be16(b, p + 22),
                    clientPort: be16(b, p + 2), virtualPort: be16(b, p + 4), realPort: be16(b, p + 6), timeout: 0,
                    client: .v4(IPv4Address(be32(b, p + 8))), virtual: .v4(IPv4Address(be32(b, p + 12))),
                    real: .v4(IPv4Address(be32(b, p + 16)))))
            p += flags & SyncConnectionFlags.sequenceMask != 0 ? 48 : 24
            guard p <= b.count else { throw .truncatedEntry(i) }
        }
        return (b[1], records, 0)
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
    static func be16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) << 8 | UInt16(b[at + 1]) }
    static func be32(_ b: [UInt8], _ at: Int) -> UInt32 { UInt32(be16(b, at)) << 16 | UInt32(be16(b, at + 2)) }
}
