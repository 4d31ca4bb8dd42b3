/// What an SCTP packet means to IPVS's state table (`ipvs_sctp_event_t`):
/// its first chunk, or ABORT where a COOKIE ECHO or COOKIE ACK comes with one.
public enum SCTPEvent {
    /// DATA, SACK, HEARTBEAT and its ACK, ECNE, CWR and every chunk type IPVS does not know.
    public static let data: UInt8 = 0
    public static let initiation: UInt8 = 1
    public static let initiationAck: UInt8 = 2
    public static let cookieEcho: UInt8 = 3
    public static let cookieAck: UInt8 = 4
    public static let shutdown: UInt8 = 5
    public static let shutdownAck: UInt8 = 6
    public static let shutdownComplete: UInt8 = 7
    public static let error: UInt8 = 8
    public static let abort: UInt8 = 9
    public static let count = 10

    /// The event of the packet whose first chunk header is at `chunk` (the
    /// caller has checked it is there) and which ends at `end`.
    @inlinable
    public static func of(_ frame: Span<UInt8>, chunk: Int, end: Int) -> UInt8 {
        var type = frame[chunk]
        // RFC 9260 3.3.7: control chunks may precede an ABORT in its packet; IPVS counts the two cookie chunks as the ABORT.
        if type == 10 || type == 11 {
            let length = Int(frame.be16(at: chunk &+ 2))
            let next = chunk &+ (length &+ 3) & ~3
            if length >= HeaderLength.sctpChunk, next < end, frame[next] == 6 { type = 6 }
        }
        // The kernel's `sctp_events`, chunk type (RFC 9260 section 3.2) to event.
        switch type {
        case 1: return initiation
        case 2: return initiationAck
        case 6: return abort
        case 7: return shutdown
        case 8: return shutdownAck
        case 9: return error
        case 10: return cookieEcho
        case 11: return cookieAck
        case 14: return shutdownComplete
        default: return data
        }
    }
}

/// Edits inside SCTP chunks.
public enum SCTPChunk {
    /// Turns every IPv4 and IPv6 address parameter of the INIT or INIT ACK
    /// chunk at `chunk` into a padding parameter (RFC 4820, type 0x8005) of
    /// the same length, which the receiver skips: the chunk keeps its length
    /// and the association its other parameters (the state cookie among
    /// them). Returns whether it changed anything.
    @inlinable
    public static func padAddresses(_ b: inout MutableSpan<UInt8>, chunk: Int, end: Int) -> Bool {
        guard chunk &+ 20 <= end else { return false }
        let chunkEnd = min(chunk &+ Int(b.be16(at: chunk &+ 2)), end)
        // Parameters follow the chunk header and the 16 fixed bytes (RFC 9260 3.3.2).
        var at = chunk &+ 20
        var changed = false
        while at &+ 4 <= chunkEnd {
            let length = Int(b.be16(at: at &+ 2))
            guard length >= 4 else { break }
            let type = b.be16(at: at)
            if type == 5 || type == 6 {
                b.setBE16(0x8005, at: at)
                changed = true
            }
            at &+= (length &+ 3) & ~3
        }
        return changed
    }
}
