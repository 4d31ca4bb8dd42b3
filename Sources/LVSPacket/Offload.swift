/// What the kernel says of a frame it hands over with offloads on (the
/// `struct virtio_net_hdr` that AF_PACKET puts before each frame with
/// PACKET_VNET_HDR, in host byte order): whether its transport checksum is
/// left for the sender to finish (CHECKSUM_PARTIAL), and whether it is a
/// super-frame of several segments (GSO: a TSO sender's, or GRO's).
public struct OffloadHeader: Sendable, Equatable, BitwiseCopyable {
    public static let size = 10
    /// VIRTIO_NET_HDR_F_NEEDS_CSUM.
    public static let needsChecksum: UInt8 = 1
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoUDPL4: UInt8 = 5
    /// VIRTIO_NET_HDR_GSO_ECN: the first segment carries CWR.
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8
    public var gsoType: UInt8
    public var headerLength: UInt16
    public var segmentSize: UInt16
    /// Where the checksummed part starts, from the Ethernet header.
    public var checksumStart: UInt16
    /// Where the checksum field lies, from `checksumStart`.
    public var checksumOffset: UInt16

    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, segmentSize: UInt16 = 0, checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0)
    {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.segmentSize = segmentSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Reads the header at `offset` (the kernel writes it in host order: little-endian here).
    public init(_ s: Span<UInt8>, at offset: Int) {
        func le16(_ o: Int) -> UInt16 { UInt16(s[offset &+ o]) | UInt16(s[offset &+ o &+ 1]) &<< 8 }
        self.init(flags: s[offset], gsoType: s[offset &+ 1], headerLength: le16(2), segmentSize: le16(4), checksumStart: le16(6), checksumOffset: le16(8))
    }

    /// Writes the header at `offset`, as the kernel reads it (host order).
    public func store(_ b: inout MutableSpan<UInt8>, at offset: Int) {
        func le16(_ v: UInt16, _ o: Int) {
            b[offset &+ o] = UInt8(truncatingIfNeeded: v)
            b[offset &+ o &+ 1] = UInt8(truncatingIfNeeded: v &>> 8)
        }
        b[offset] = flags
        b[offset &+ 1] = gsoType
        le16(headerLength, 2)
        le16(segmentSize, 4)
        le16(checksumStart, 6)
        le16(checksumOffset, 8)
    }

    public var isPlain: Bool { flags & Self.needsChecksum == 0 && gsoType == Self.gsoNone }
    public var isSegmented: Bool { gsoType & ~Self.gsoECN != Self.gsoNone }
}

/// Why a frame the kernel handed over with offloads could not be made into
/// frames for the wire.
public enum OffloadError: Error, Sendable, Equatable {
    /// The checksum's place lies outside the frame.
    case badChecksumPlace
    /// A GSO kind lvsd does not segment (UFO, tunnels, SCTP) or a frame
    /// whose headers contradict it.
    case unsupportedSegmentation
}

/// What a sender (a NIC, or the kernel's GSO) would do to such a frame,
/// done in userspace, so that the engine only ever sees frames as they
/// travel on the wire.
public enum SoftwareOffload {
    /// Finishes a CHECKSUM_PARTIAL checksum: the field holds the
    /// pseudo-header's sum; the sum from `start` to the frame's end goes
    /// into it, complemented (0 becomes 0xFFFF, as the kernel writes it).
    public static func finishChecksum(_ b: inout MutableSpan<UInt8>, frame: FrameBounds, start: Int, offset: Int) throws(OffloadError) {
        let from = frame.start &+ start
        let field = from &+ offset
        guard start >= 14, offset >= 0, field &+ 2 <= frame.end else { throw .badChecksumPlace }
        let sum = InternetChecksum.sum(b.span, from: from, count: frame.end &- from)
        let value = InternetChecksum.finish(sum)
        b.setBE16(value == 0 ? 0xFFFF : value, at: field)
    }

    /// Finishes the transport checksum of a frame that came without word of
    /// its checksum state (AF_XDP on a veth hands over the local stack's
    /// CHECKSUM_PARTIAL frames as they are) when the field holds exactly the
    /// pseudo-header's sum, as a partial checksum does, and the whole does
    /// not already verify. Costs one pseudo-header sum for a frame whose
    /// checksum is complete; returns whether it finished one.
    public static func finishIfPartial(_ b: inout MutableSpan<UInt8>, frame: FrameBounds) -> Bool {
        guard let (field, value) = partialChecksum(b.span, frame: frame) else { return false }
        b.setBE16(value, at: field)
        return true
    }

    /// Where a partial checksum lies and its finished value, if the frame has one.
    static func partialChecksum(_ s: Span<UInt8>, frame: FrameBounds) -> (Int, UInt16)? {
        guard let t = transport(s, frame: frame) else { return nil }
        let field: Int
        switch t.proto {
        case IPProtocolNumber.tcp: field = t.l4 &+ 16
        case IPProtocolNumber.udp: field = t.l4 &+ 6
        default: return nil
        }
        guard field &+ 2 <= t.end else { return nil }
        let length = t.end &- t.l4
        let sum = t.addressSum &+ UInt64(t.proto) &+ UInt64(length)
        guard s.be16(at: field) == InternetChecksum.fold(sum), InternetChecksum.fold(InternetChecksum.sum(s, from: t.l4, count: length, initial: sum)) != 0xFFFF
        else { return nil }
        let value = InternetChecksum.finish(InternetChecksum.sum(s, from: t.l4, count: length))
        return (field, value == 0 ? 0xFFFF : value)
    }

    /// Makes a TCP super-frame that went through the engine whole ready for
    /// the kernel's segmentation again: its checksum field back to the
    /// pseudo-header's sum over the frame's addresses and transport length
    /// (what a partial checksum holds; the engine's incremental updates took
    /// it for a finished one, and the kernel adds each segment's own sum),
    /// and the virtio-net header that says so, with the input's segment size
    /// and ECN flag. Nil for a frame that is not TCP over IPv4 or IPv6 (without
    /// extension headers) after the engine: it cannot be sent as GSO.
    public static func partialAgain(_ b: inout MutableSpan<UInt8>, frame: FrameBounds, like input: OffloadHeader) -> OffloadHeader? {
        guard let t = transport(b.span, frame: frame), t.proto == IPProtocolNumber.tcp, t.l4 &+ 20 <= t.end else { return nil }
        let transportHeader = Int(b[t.l4 &+ 12] &>> 4) &* 4
        guard transportHeader >= 20, t.l4 &+ transportHeader < t.end else { return nil }
        b.setBE16(InternetChecksum.fold(t.addressSum &+ UInt64(IPProtocolNumber.tcp) &+ UInt64(t.end &- t.l4)), at: t.l4 &+ 16)
        return OffloadHeader(
            flags: OffloadHeader.needsChecksum, gsoType: (t.ipv4 ? OffloadHeader.gsoTCPv4 : OffloadHeader.gsoTCPv6) | input.gsoType & OffloadHeader.gsoECN,
            headerLength: UInt16(t.l4 &+ transportHeader &- frame.start), segmentSize: input.segmentSize,
            checksumStart: UInt16(t.l4 &- frame.start), checksumOffset: 16)
    }

    /// The transport segment of an unfragmented IPv4 or IPv6 (no extension
    /// headers) datagram after Ethernet and at most one VLAN tag: where it
    /// starts and ends (as the IP header says: a short frame is padded), its
    /// protocol and the pseudo-header's sum of the addresses.
    static func transport(_ s: Span<UInt8>, frame: FrameBounds) -> (l4: Int, end: Int, proto: UInt8, addressSum: UInt64, ipv4: Bool)? {
        guard frame.length >= 14 &+ 20 else { return nil }
        var l3 = frame.start &+ 14
        var etherType = s.be16(at: frame.start &+ 12)
        if etherType == EtherType.vlan {
            etherType = s.be16(at: frame.start &+ 16)
            l3 &+= 4
        }
        let t: (l4: Int, end: Int, proto: UInt8, addressSum: UInt64, ipv4: Bool)
        if etherType == EtherType.ipv4, l3 &+ 20 <= frame.end {
            let ihl = Int(s[l3] & 0x0F) &* 4
            // A fragment's transport header is not all here (or not here at all).
            guard ihl >= 20, s.be16(at: l3 &+ 6) & 0x3FFF == 0 else { return nil }
            t = (l3 &+ ihl, l3 &+ Int(s.be16(at: l3 &+ 2)), s[l3 &+ 9], InternetChecksum.sum(s, from: l3 &+ 12, count: 8), true)
        } else if etherType == EtherType.ipv6, l3 &+ 40 <= frame.end {
            t = (l3 &+ 40, l3 &+ 40 &+ Int(s.be16(at: l3 &+ 4)), s[l3 &+ 6], InternetChecksum.sum(s, from: l3 &+ 8, count: 32), false)
        } else {
            return nil
        }
        return t.end <= frame.end ? t : nil
    }

    /// Cuts a GSO super-frame (TCP over IPv4 or IPv6, or UDP with
    /// UDP_SEGMENT) into the segments its sender would have sent: headers
    /// copied, lengths, IPv4 identification, sequence numbers and flags as
    /// the kernel's GSO sets them, every checksum complete. Each segment is
    /// built in `scratch` (at least the headers and one segment long; the
    /// caller's, so that nothing is allocated), and `emit` gets its bytes in
    /// order and returns false to stop (no room). Returns how many were emitted.
    public static func segment(
        _ s: Span<UInt8>, frame: FrameBounds, header h: OffloadHeader, scratch out: inout MutableSpan<UInt8>, emit: (Span<UInt8>) -> Bool
    ) throws(OffloadError) -> Int {
        let kind = h.gsoType & ~OffloadHeader.gsoECN
        let l4 = Int(h.checksumStart)
        let mss = Int(h.segmentSize)
        guard h.flags & OffloadHeader.needsChecksum != 0, mss > 0, frame.length >= 14, l4 >= 14 &+ 20, l4 < frame.length else { throw .unsupportedSegmentation }
        // The network header: after Ethernet and at most one VLAN tag.
        var l3 = 14
        var etherType = s.be16(at: frame.start &+ 12)
        if etherType == EtherType.vlan {
            guard frame.length >= 18 else { throw .unsupportedSegmentation }
            etherType = s.be16(at: frame.start &+ 16)
            l3 = 18
        }
        let tcp: Bool
        switch (kind, etherType) {
        case (OffloadHeader.gsoTCPv4, EtherType.ipv4), (OffloadHeader.gsoTCPv6, EtherType.ipv6): tcp = true
        case (OffloadHeader.gsoUDPL4, EtherType.ipv4), (OffloadHeader.gsoUDPL4, EtherType.ipv6): tcp = false
        default: throw .unsupportedSegmentation
        }
        let ipv4 = etherType == EtherType.ipv4
        let transportHeader = tcp ? Int(s[frame.start &+ l4 &+ 12] &>> 4) &* 4 : 8
        let headers = l4 &+ transportHeader
        guard transportHeader >= (tcp ? 20 : 8), headers <= frame.length, l3 &+ (ipv4 ? 20 : 40) <= l4, headers &+ mss <= out.count else {
            throw .unsupportedSegmentation
        }
        let payload = frame.length &- headers
        guard payload > 0 else { throw .unsupportedSegmentation }
        let a = frame.start &+ l3
        let protocolNumber = tcp ? IPProtocolNumber.tcp : IPProtocolNumber.udp
        // The pseudo-header's addresses: the same for every segment.
        var addressSum: UInt64 = 0
        if ipv4 {
            addressSum = InternetChecksum.sum(s, from: a &+ 12, count: 8)
        } else {
            addressSum = InternetChecksum.sum(s, from: a &+ 8, count: 32)
        }
        let identification = ipv4 ? s.be16(at: a &+ 4) : 0
        let sequence = tcp ? s.be32(at: frame.start &+ l4 &+ 4) : 0
        let flags = tcp ? s[frame.start &+ l4 &+ 13] : 0
        var emitted = 0
        var offset = 0
        while offset < payload {
            let size = min(mss, payload &- offset)
            let last = offset &+ size == payload
            let length = headers &+ size
            for k in 0..<headers { out[k] = s[frame.start &+ k] }
            for k in 0..<size { out[headers &+ k] = s[frame.start &+ headers &+ offset &+ k] }
            let l3Out = l3
            if ipv4 {
                out.setBE16(UInt16(length &- l3Out), at: l3Out &+ 2)
                out.setBE16(identification &+ UInt16(truncatingIfNeeded: emitted), at: l3Out &+ 4)
                out.setBE16(0, at: l3Out &+ 10)
                let ihl = Int(out[l3Out] & 0x0F) &* 4
                out.setBE16(InternetChecksum.finish(InternetChecksum.sum(out.span, from: l3Out, count: ihl)), at: l3Out &+ 10)
            } else {
                out.setBE16(UInt16(length &- l3Out &- 40), at: l3Out &+ 4)
            }
            let transportLength = length &- l4
            if tcp {
                out.setBE32(sequence &+ UInt32(truncatingIfNeeded: offset), at: l4 &+ 4)
                // FIN and PSH on the last segment only; CWR on the first only.
                var f = flags
                if !last { f &= ~0x09 }
                if emitted > 0 { f &= ~0x80 }
                out[l4 &+ 13] = f
            } else {
                out.setBE16(UInt16(transportLength), at: l4 &+ 4)
            }
            let checksumField = l4 &+ (tcp ? 16 : 6)
            out.setBE16(0, at: checksumField)
            let sum = InternetChecksum.sum(
                out.span, from: l4, count: transportLength,
                initial: addressSum &+ UInt64(protocolNumber) &+ UInt64(transportLength))
            let value = InternetChecksum.finish(sum)
            out.setBE16(value == 0 && !tcp ? 0xFFFF : value, at: checksumField)
            guard emit(out.span.extracting(0..<length)) else { return emitted }
            emitted &+= 1
            offset &+= size
        }
        return emitted
    }
}
