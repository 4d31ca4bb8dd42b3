/// CRC32c (Castagnoli, RFC 3309), the checksum of every SCTP packet, eight
/// bytes per step from eight tables (slicing-by-8): about a third of the work
/// of the bytewise loop on a full-sized packet.
public enum CRC32c {
    /// Table k maps a byte to its remainder k bytes further on; table 0 is
    /// the bytewise table of the reflected polynomial 0x82F63B78.
    @usableFromInline static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? (c &>> 1) ^ 0x82F6_3B78 : c &>> 1 }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let previous = t[(k - 1) * 256 + i]
                t[k * 256 + i] = (previous &>> 8) ^ t[Int(previous & 0xFF)]
            }
        }
        return t
    }()

    /// The CRC32c of `count` bytes at `offset`, as a number (RFC 3720's test
    /// vectors state it so: 32 zero bytes give 0x8A9136AA).
    @inlinable
    public static func checksum(_ span: Span<UInt8>, from offset: Int, count: Int) -> UInt32 {
        precondition(offset >= 0 && count >= 0 && offset &+ count <= span.count)
        let t = tables.span
        var crc: UInt32 = 0xFFFF_FFFF
        var i = offset
        let end = offset &+ count
        while i &+ 8 <= end {
            // `unsafe` only because a load could produce an invalid value of
            // some types; integers have none, and the range is checked.
            let w = UInt64(littleEndian: unsafe span.bytes.unsafeLoadUnaligned(fromByteOffset: i, as: UInt64.self)) ^ UInt64(crc)
            crc =
                t[7 &* 256 &+ Int(w & 0xFF)] ^ t[6 &* 256 &+ Int((w &>> 8) & 0xFF)]
                ^ t[5 &* 256 &+ Int((w &>> 16) & 0xFF)] ^ t[4 &* 256 &+ Int((w &>> 24) & 0xFF)]
                ^ t[3 &* 256 &+ Int((w &>> 32) & 0xFF)] ^ t[2 &* 256 &+ Int((w &>> 40) & 0xFF)]
                ^ t[256 &+ Int((w &>> 48) & 0xFF)] ^ t[Int(w &>> 56)]
            i &+= 8
        }
        while i < end {
            crc = (crc &>> 8) ^ t[Int((crc ^ UInt32(span[i])) & 0xFF)]
            i &+= 1
        }
        return ~crc
    }

    /// Writes the CRC32c of the SCTP packet (common header and chunks) that
    /// occupies `offset..<end`, computed with its checksum field as zero, the
    /// way RFC 4960 appendix B sends it: least significant byte first.
    @inlinable
    public static func seal(_ b: inout MutableSpan<UInt8>, sctpAt offset: Int, end: Int) {
        b.setBE32(0, at: offset &+ 8)
        b.setBE32(checksum(b.span, from: offset, count: end &- offset).byteSwapped, at: offset &+ 8)
    }
}
