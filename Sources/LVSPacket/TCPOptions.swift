/// TCP option edits for FULLNAT: the TOA option that carries the client's
/// address to the real server, and the MSS clamp that leaves room for it.
public enum TCPOptionEditor {
    /// TOA's option kind (DPVS and toa.ko): 254.
    public static let toaKind: UInt8 = 254
    public static let mssKind: UInt8 = 2
    public static let sackKind: UInt8 = 5
    public static let timestampKind: UInt8 = 8

    /// TOA length for an address family: 8 for IPv4, 20 for IPv6.
    @inlinable public static func toaLength<A: IPAddressProtocol>(for _: A.Type) -> Int { 4 &+ A.byteCount }

    /// Lowers the MSS option by `amount` (FULLNAT leaves room for TOA).
    @inlinable
    public static func lowerMSS(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket, by amount: UInt16) -> Bool {
        clampMSS(&b, p, maximum: 0, reduceBy: amount)
    }

    /// Lowers the MSS option to at most `maximum` (or by `reduceBy` when it is
    /// not 0). Returns true when changed.
    @inlinable
    public static func clampMSS(_ b: inout MutableSpan<UInt8>, _ p: ParsedPacket, maximum: UInt16, reduceBy: UInt16 = 0) -> Bool {
        guard let i = optionOffset(b, p, kind: mssKind, length: 4) else { return false }
        let mss = b.be16(at: i &+ 2)
        let target = reduceBy != 0 ? (mss > reduceBy ? mss &- reduceBy : mss) : maximum
        guard mss > target else { return false }
        b.setBE16(target, at: i &+ 2)
        PacketRewriter.updateTransportChecksum(&b, p, removing: UInt64(mss), adding: UInt64(target))
        return true
    }

    /// Where the TCP option `kind` of `length` bytes (any length when nil)
    /// starts, or nil (also for options that run past the header).
    @inlinable
    public static func optionOffset(_ b: borrowing MutableSpan<UInt8>, _ p: ParsedPacket, kind wanted: UInt8, length: Int? = nil) -> Int? {
        guard p.proto == IPProtocolNumber.tcp else { return nil }
        var i = p.l4Offset &+ HeaderLength.tcp
        let end = p.l4Offset &+ p.l4HeaderLength
        while i < end {
            let kind = b[i]
            if kind == 0 { return nil }
            if kind == 1 {
                i &+= 1
                continue
            }
            guard i &+ 1 < end else { return nil }
            let len = Int(b[i &+ 1])
            guard len >= 2, i &+ len <= end else { return nil }
            if kind == wanted && (length == nil || len == length) { return i }
            i &+= len
        }
        return nil
    }

    /// Inserts a TOA option carrying `address`:`port` right after the fixed TCP
    /// header. The headers move towards the headroom, the payload stays. When
    /// the 40-byte option space is short, NOPs and an old TOA are removed, then
    /// SACK blocks; if that is still not enough the packet is left unchanged.
    @inlinable
    public static func insertTOA<A: IPAddressProtocol>(
        _ b: inout MutableSpan<UInt8>, frame: inout FrameBounds, packet p: inout ParsedPacket,
        address: A, port: UInt16, mtu: Int
    ) throws(EditError) {
        guard p.proto == IPProtocolNumber.tcp, p.fragment == .none else { throw .notTCP }
        let n = toaLength(for: A.self)
        if p.l4HeaderLength &+ n > 60 {
            compactOptions(&b, frame: &frame, packet: &p, dropSACK: false)
            if p.l4HeaderLength &+ n > 60 { compactOptions(&b, frame: &frame, packet: &p, dropSACK: true) }
            guard p.l4HeaderLength &+ n <= 60 else { throw .noOptionSpace }
        }
        guard p.ipEnd &- p.l3Offset &+ n <= mtu else { throw .exceedsMTU }
        guard frame.start >= n else { throw .noHeadroom }
        let optionAt = p.l4Offset &+ HeaderLength.tcp
        b.moveBytes(from: frame.start, to: frame.start &- n, count: optionAt &- frame.start)
        frame.start &-= n
        frame.length &+= n
        let oldEnd = p.ipEnd
        p.shift(by: -n)
        p.ipEnd = oldEnd
        let at = optionAt &- n
        b[at] = toaKind
        b[at &+ 1] = UInt8(truncatingIfNeeded: n)
        b.setBE16(port, at: at &+ 2)
        address.store(&b, at: at &+ 4)
        // Checksum: the option's words, the data-offset word and the pseudo-header length.
        let doffWord = p.l4Offset &+ 12
        let oldDoff = UInt64(b.be16(at: doffWord))
        p.l4HeaderLength &+= n
        b[doffWord] = UInt8(truncatingIfNeeded: p.l4HeaderLength &>> 2) &<< 4 | (b[doffWord] & 0x0F)
        let newDoff = UInt64(b.be16(at: doffWord))
        let optionSum = InternetChecksum.sum(b.span, from: at, count: n)
        PacketRewriter.updateTransportChecksum(&b, p, removing: oldDoff, adding: newDoff &+ optionSum &+ UInt64(n))
        PacketRewriter.setIPLength(&b, p)
    }

    /// Rewrites the options without NOPs and TOA (and SACK blocks when asked),
    /// padded with NOPs to a multiple of 4 at the front; shrinks the header by
    /// moving the headers away from the payload, then fixes lengths and checksum.
    @inlinable
    static func compactOptions(_ b: inout MutableSpan<UInt8>, frame: inout FrameBounds, packet p: inout ParsedPacket, dropSACK: Bool) {
        let start = p.l4Offset &+ HeaderLength.tcp
        let end = p.l4Offset &+ p.l4HeaderLength
        var read = start
        var write = start
        while read < end {
            let kind = b[read]
            if kind == 0 { break }
            if kind == 1 {
                read &+= 1
                continue
            }
            guard read &+ 1 < end else { break }
            let len = Int(b[read &+ 1])
            guard len >= 2, read &+ len <= end else { break }
            let drop = kind == toaKind || (dropSACK && kind == sackKind)
            if !drop {
                b.moveBytes(from: read, to: write, count: len)
                write &+= len
            }
            read &+= len
        }
        let kept = write &- start
        let padded = (kept &+ 3) & ~3
        let removed = (end &- start) &- padded
        guard removed > 0 else { return }
        // Options slide towards the payload, the pad of NOPs goes in front of them.
        b.moveBytes(from: start, to: end &- kept, count: kept)
        b.fill(1, from: end &- padded, count: padded &- kept)
        // Headers before the options slide by `removed` towards the payload too.
        b.moveBytes(from: frame.start, to: frame.start &+ removed, count: start &- frame.start)
        frame.start &+= removed
        frame.length &-= removed
        let oldEnd = p.ipEnd
        p.shift(by: removed)
        p.ipEnd = oldEnd
        p.l4HeaderLength &-= removed
        let doffWord = p.l4Offset &+ 12
        b[doffWord] = UInt8(truncatingIfNeeded: p.l4HeaderLength &>> 2) &<< 4 | (b[doffWord] & 0x0F)
        PacketRewriter.setIPLength(&b, p)
        PacketRewriter.recomputeTransportChecksum(&b, p)
    }
}
