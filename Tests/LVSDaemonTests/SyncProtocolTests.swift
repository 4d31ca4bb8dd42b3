import LVSCore
import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSAdmin
@testable import LVSConfiguration
@testable import LVSControlProtocol
@testable import LVSDaemon
@testable import LVSSystem

/// The sync protocol's bytes, written out from the layout in `ip_vs_sync.c`
/// (header, `struct ip_vs_sync_v4`, options), not from our encoder.
@Suite struct SyncProtocolTests {
    let nat = SyncRecord(
        proto: 6, flags: 0, state: 1, clientPort: 40000, virtualPort: 80, realPort: 8080, timeout: 900,
        client: ip("198.18.0.100"), virtual: ip("198.18.0.10"), real: ip("198.19.0.2"))

    @Test func anIPv4EntryIsTheKernelsThirtySixBytes() {
        let m = SyncProtocol.encode([nat], syncID: 5)
        #expect(
            m == [
                [
                    0, 5, 0, 44, 1, 1, 0, 0,
                    0, 6, 0x00, 36, 0, 0, 0, 0, 0, 1, 0x9C, 0x40, 0, 80, 0x1F, 0x90, 0, 0, 0, 0, 0, 0, 0x03, 0x84,
                    198, 18, 0, 100, 198, 18, 0, 10, 198, 19, 0, 2,
                ]
            ])
        let (id, records, skipped) = try! SyncProtocol.decode(m[0])
        #expect(id == 5 && records == [nat] && skipped == 0)
    }

    @Test func fullNATAddsAnOptionalParameterIPv6ItsAddresses() throws {
        var f = nat
        f.flags = 5
        f.local = ip("198.19.0.100")
        f.localPort = 1025
        let m = SyncProtocol.encode([f], syncID: 0)[0]
        #expect(Array(m[8 + 36..<m.count]) == [0x48, 6, 198, 19, 0, 100, 0x04, 0x01] && m[11] == 44)
        #expect(try SyncProtocol.decode(m).records == [f])
        let six = SyncRecord(
            proto: 17, flags: 0x183, state: 0, clientPort: 1, virtualPort: 53, realPort: 53, timeout: 300,
            client: ip("2001:db8::100"), virtual: ip("2001:db8::10"), real: ip("2001:db8:1::2"))
        let m6 = SyncProtocol.encode([six], syncID: 0)[0]
        #expect(m6.count == 8 + 72 && m6[8] == 1 && m6[11] == 72 && Array(m6[32..<48]) == FrameBuilder.addressBytes(ip("2001:db8::100")))
        #expect(try SyncProtocol.decode(m6).records == [six])
    }

    @Test func messagesStayUnderMaxLengthAnd255Entries() throws {
        let many = (0..<600).map { i in
            var r = nat
            r.clientPort = UInt16(10000 + i)
            return r
        }
        let small = SyncProtocol.encode(many, syncID: 1, maxLength: 8 + 36 * 10)
        #expect(small.count == 60 && small.allSatisfy { $0.count == 368 && $0[4] == 10 })
        let big = SyncProtocol.encode(many, syncID: 1, maxLength: 65000)
        #expect(big.map { Int($0[4]) } == [255, 255, 90])
        let decoded = try big.flatMap { try SyncProtocol.decode($0).records }
        #expect(decoded == many)
    }

    /// A shifted connection (PROXY protocol) carries `IPVS_OPT_SEQ_DATA`:
    /// type 1, 24 bytes, `in_seq` then `out_seq`, each init, delta, previous
    /// delta in network order; the flags say which side is shifted.
    @Test func sequenceShiftsTravelAsTheKernelsSequenceOption() throws {
        var r = nat
        r.flags = SyncConnectionFlags.requestSequence
        r.sequence = SequenceShifts(request: SequenceShift(initial: 1000, delta: 28, previousDelta: 0))
        let m = SyncProtocol.encode([r], syncID: 0)[0]
        #expect(m[11] == 62 && Array(m[8 + 4..<8 + 8]) == [0, 0, 0x04, 0])
        #expect(
            Array(m[8 + 36..<8 + 62]) == [1, 24, 0, 0, 0x03, 0xE8, 0, 0, 0, 28, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 12))
        #expect(try SyncProtocol.decode(m).records == [r])
        // Flags that promise sequence data without the option are cleared, as the kernel does.
        var promise = nat
        promise.flags = SyncConnectionFlags.requestSequence
        #expect(try SyncProtocol.decode(SyncProtocol.encode([promise], syncID: 0)[0]).records == [nat])
    }

    @Test func kernelMessagesDecodePaddingSequencesAndVersionZero() throws {
        // A kernel entry with the SEQ option (62 bytes, padded to 64) followed by a plain one.
        var seq: [UInt8] =
            [
                0, 6, 0, 62, 0, 0, 0x06, 0x00, 0, 1, 0x9C, 0x40, 0, 21, 0, 21, 0, 0, 0, 0, 0, 0, 0x03, 0x84,
                198, 18, 0, 100, 198, 18, 0, 10, 198, 19, 0, 2, 1, 24,
            ] + [UInt8](repeating: 7, count: 24) + [0, 0]
        let plain = SyncProtocol.entry(nat)
        var m: [UInt8] = [0, 0, 0, 0, 2, 1, 0, 0] + seq + plain
        m[3] = UInt8(m.count)
        let (_, records, _) = try SyncProtocol.decode(m)
        #expect(records.count == 2 && records[0].virtualPort == 21 && records[0].flags == 0x600 && records[1] == nat)
        let sevens = SequenceShift(initial: 0x0707_0707, delta: 0x0707_0707, previousDelta: 0x0707_0707)
        #expect(records[0].sequence == SequenceShifts(request: sevens, reply: sevens))
        // An unknown mandatory option skips that entry only; an optional one is ignored.
        seq[36] = 9
        m = [0, 0, 0, 0, 2, 1, 0, 0] + seq + plain
        m[3] = UInt8(m.count)
        #expect(try SyncProtocol.decode(m).records == [nat] && (try SyncProtocol.decode(m).skipped) == 1)
        seq[36] = 0x49
        m = [0, 0, 0, 0, 2, 1, 0, 0] + seq + plain
        m[3] = UInt8(m.count)
        #expect(try SyncProtocol.decode(m).records.count == 2)
        // Version 0: count, syncid, size, then 24-byte entries.
        let v0: [UInt8] = [1, 7, 0, 28, 0, 6, 0x9C, 0x40, 0, 80, 0x1F, 0x90, 198, 18, 0, 100, 198, 18, 0, 10, 198, 19, 0, 2, 0, 0, 0, 1]
        let d0 = try SyncProtocol.decode(v0)
        #expect(d0.syncID == 7 && d0.records.count == 1 && d0.records[0].clientPort == 40000 && d0.records[0].timeout == 0)
    }

    @Test func malformedMessagesAreRefusedWithAReason() {
        let good = SyncProtocol.encode([nat], syncID: 0)[0]
        #expect(throws: SyncProtocol.DecodeError.tooShort) { try SyncProtocol.decode([0, 0]) }
        #expect(throws: SyncProtocol.DecodeError.sizeMismatch(header: 44, received: 43)) { try SyncProtocol.decode(Array(good.dropLast())) }
        var long = good
        long[11] = 200
        long[3] = UInt8(long.count)
        #expect(throws: SyncProtocol.DecodeError.truncatedEntry(0)) { try SyncProtocol.decode(long) }
        var version = good
        version[10] = 0x10
        #expect(throws: SyncProtocol.DecodeError.unknownVersion(1)) { try SyncProtocol.decode(version) }
        var zeroOption = good + [0x48, 0, 0, 0]
        zeroOption[3] = UInt8(zeroOption.count)
        zeroOption[11] = 40
        #expect(throws: SyncProtocol.DecodeError.badOption(0)) { try SyncProtocol.decode(zeroOption) }
    }
}
