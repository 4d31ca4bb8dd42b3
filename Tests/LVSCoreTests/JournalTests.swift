import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// The state file's slots: what a worker writes for a connection and when,
/// what a new director makes of them, and what it refuses.
@Suite(.serialized) struct JournalTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let rs = ip("198.19.0.2")
    let lip = ip("198.19.0.100")

    /// Heap memory standing in for the shared mapping, freed by the test.
    final class Slots {
        let base: UnsafeMutableRawPointer
        let count: Int
        init(_ count: Int) {
            self.count = count
            base = UnsafeMutableRawPointer.allocate(byteCount: count * JournalSlot.size, alignment: 64)
            base.initializeMemory(as: UInt8.self, repeating: 0, count: count * JournalSlot.size)
        }
        deinit { base.deallocate() }
        var region: JournalRegion { JournalRegion(unsafeBase: base, slots: count) }
        func bytes(_ i: Int) -> [UInt8] {
            Array(UnsafeRawBufferPointer(start: base + i * JournalSlot.size, count: JournalSlot.size))
        }
        func content(_ i: Int) -> JournalSlot.Content { JournalSlot.decode(bytes(i).span) }
        var records: [JournalRecord] {
            (0..<count).compactMap { if case .record(let r) = content($0) { r } else { nil } }
        }
    }

    /// The same services and frames as the sync tests'.
    let sync = SyncTests()
    func service(_ m: ForwardingMethod, persistence: UInt32? = nil) -> VirtualServiceConfiguration { sync.service(m, persistence: persistence) }
    func fromClient(_ h: Harness, flags: UInt8, payload: [UInt8] = []) -> [UInt8] { sync.fromClient(h, flags: flags, payload: payload) }
    func fromReal(to dst: IPAddress, port: UInt16, flags: UInt8) -> [UInt8] { sync.fromReal(to: dst, port: port, flags: flags) }

    func journaled(_ h: inout Harness) -> (Slots, Slots) {
        let s4 = Slots(h.director.v4.table.capacity)
        let s6 = Slots(h.director.v6.table.capacity)
        h.director.attachJournal(v4: s4.region, v6: s6.region, now: h.now)
        return (s4, s6)
    }

    @Test func aSlotHoldsEveryFieldAndItsChecksumRefusesAnyChange() {
        let r = JournalRecord(
            sync: SyncRecord(
                proto: 6, flags: 5 | SyncConnectionFlags.requestSequence, state: 1, clientPort: 40000, virtualPort: 80, realPort: 8080,
                firewallMark: 7, timeout: 900, client: ip("2001:db8::100"), virtual: ip("2001:db8::10"), real: ip("2001:db8:1::2"),
                local: ip("2001:db8:1::100"), localPort: 5001,
                sequence: SequenceShifts(
                    request: SequenceShift(initial: 1, delta: 2, previousDelta: 3), reply: SequenceShift(initial: 4, delta: 5, previousDelta: 6))),
            synproxySequence: 0xDEAD_BEEF, writtenAt: 123_456)
        var bytes = [UInt8](repeating: 0, count: JournalSlot.size)
        var span = bytes.mutableSpan
        JournalSlot.encode(r, into: &span)
        #expect(JournalSlot.decode(bytes.span) == .record(r))
        #expect(JournalSlot.decode([UInt8](repeating: 0, count: JournalSlot.size).span) == .free)
        for k in [0, 4, 5, 40, 100, 127] {
            var damaged = bytes
            damaged[k] ^= 0x10
            #expect(JournalSlot.decode(damaged.span) == .corrupt, "byte \(k)")
        }
        // A slot whose checksum is right but whose flags no writer sets is refused too.
        var odd = bytes
        odd[8] |= 0x80
        var sealed = odd.mutableSpan
        sealed.setBE32(CRC32c.checksum(sealed.span, from: 4, count: JournalSlot.size - 4), at: 0)
        #expect(JournalSlot.decode(odd.span) == .corrupt)
    }

    @Test func theHeaderNamesItsFormatAndBoot() throws {
        let boot = [UInt8](1...16)
        let h = StateFileHeader(workers: 2, slotsPerRegion: 1000, bootID: boot)
        var bytes = [UInt8](repeating: 0, count: StateFileHeader.size)
        var span = bytes.mutableSpan
        h.encode(into: &span)
        #expect(try StateFileHeader.decode(bytes.span, bootID: boot) == h)
        #expect(h.regionOffset(3) == 4096 + 3 * 1000 * 128 && h.fileSize == 4096 + 4 * 1000 * 128)
        #expect(throws: StateFileHeader.Problem.otherBoot) { try StateFileHeader.decode(bytes.span, bootID: [UInt8](repeating: 0, count: 16)) }
        var other = bytes
        other[11] = 2
        #expect(throws: StateFileHeader.Problem.version(2)) { try StateFileHeader.decode(other.span, bootID: boot) }
        other = bytes
        other[17] ^= 1
        #expect(throws: StateFileHeader.Problem.damaged) { try StateFileHeader.decode(other.span, bootID: boot) }
        #expect(throws: StateFileHeader.Problem.notAStateFile) { try StateFileHeader.decode([UInt8](repeating: 0x41, count: 64).span, bootID: boot) }
    }

    /// Written where a sync master sends (the 3rd client packet, state
    /// changes out of ESTABLISHED), zeroed when the entry is freed.
    @Test func aConnectionIsWrittenWhereAMasterWouldSendItAndZeroedWhenFreed() {
        var h = Harness([service(.nat)])
        let (s4, _) = journaled(&h)
        _ = h.send(fromClient(h, flags: TCPFlags.syn))
        _ = h.send(fromReal(to: client, port: 40000, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        _ = h.send(fromClient(h, flags: TCPFlags.ack))
        #expect(s4.records.isEmpty)
        _ = h.send(fromClient(h, flags: TCPFlags.ack | TCPFlags.psh, payload: [1]))
        let i = h.director.v4.table.entries.firstIndex { $0.proto == 6 }!
        guard case .record(let r) = s4.content(i) else {
            Issue.record("slot \(i) holds no record")
            return
        }
        #expect(r.writtenAt == h.now && r.sync.state == 1 && r.sync.timeout == 900 && r.sync.real == rs && r.sync.realPort == 8080)
        _ = h.send(fromClient(h, flags: TCPFlags.rst))
        h.now += 20_000
        h.director.tick(now: h.now)
        for _ in 0..<4 { h.director.tick(now: h.now) }
        #expect(h.director.v4.table.count == 0)
        #expect(s4.content(i) == .free)
    }

    /// A new director with the same service takes the connection where the
    /// old one left it: replies of NAT and FULLNAT find it, the FULLNAT port
    /// is taken, a template controls it, the SYN proxy's delta goes on.
    @Test func aNewDirectorForwardsWhatTheOldOneLeft() {
        for m in [ForwardingMethod.nat, .fullNAT] {
            var old = Harness([service(m, persistence: 300)])
            let (s4, _) = journaled(&old)
            _ = old.send(fromClient(old, flags: TCPFlags.syn))
            let e = old.director.v4.table.entries.first { $0.proto == 6 && !$0.flags.contains(.template) }!
            let back = m == .nat ? client : lip
            _ = old.send(fromReal(to: back, port: e.localPort, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
            _ = old.send(fromClient(old, flags: TCPFlags.ack))
            _ = old.send(fromClient(old, flags: TCPFlags.ack | TCPFlags.psh, payload: [1]))
            let records = s4.records
            #expect(records.count == 2 && records.filter(\.sync.isTemplate).count == 1)

            var new = Harness([service(m, persistence: 300)])
            new.now = old.now + 5000
            let (n4, _) = journaled(&new)
            for r in records.sorted(by: { $0.sync.isTemplate && !$1.sync.isTemplate }) {
                #expect(new.director.restore(r, now: new.now) == .created)
            }
            #expect(n4.records.count == 2)
            let c = new.director.v4.table.entries.first { $0.proto == 6 && !$0.flags.contains(.template) }!
            #expect(c.localPort == e.localPort && c.state == .established && c.controller != 0)
            #expect(c.expires == old.now + 900_000)  // the time it had left, not a new timeout
            let (v, out) = new.send(fromReal(to: back, port: e.localPort, flags: TCPFlags.ack), interface: 2)
            #expect(v == .transmit(interface: 1) && field(out, 26, 4) == [198, 18, 0, 10] && field(out, 30, 4) == [198, 18, 0, 100])
            #expect(be16(out, 34) == 80 && be16(out, 36) == 40000 && FrameBuilder.checksumsValid(out))
            #expect(new.director.service(.address(.tcp, vip, 80))!.destinations[0].activeConnections == 1)
            if m == .fullNAT {
                let pool = new.director.v4.pools[0]!
                #expect(
                    pool.available(real: IPv4Address("198.19.0.2")!, port: 8080) == Harness([service(m)]).director.v4.pools[0]!.available(
                        real: IPv4Address("198.19.0.2")!, port: 8080) - 1)
            }
        }
    }

    @Test func whatNoLongerFitsTheConfigurationIsDroppedAndSaidWhy() {
        let r = JournalRecord(
            sync: SyncRecord(
                proto: 6, flags: 0, state: 1, clientPort: 40000, virtualPort: 80, realPort: 8080, timeout: 900, client: client, virtual: vip,
                real: rs),
            writtenAt: 1_000_000)
        var h = Harness([service(.nat)])
        h.now = 1_000_000 + 900_000
        #expect(h.director.restore(r, now: h.now) == .invalid)  // its time ran out
        #expect(r.remaining(now: h.now) == 0 && r.remaining(now: 1_000_001) == 899_999)
        h.now = 1_000_000
        var gone = r
        gone.sync.real = ip("198.19.0.9")
        #expect(h.director.restore(gone, now: h.now) == .noServer)
        gone = r
        gone.sync.virtualPort = 81
        #expect(h.director.restore(gone, now: h.now) == .noService)
        var report = RestoreReport()
        for o in [SyncOutcome.created, .noServer, .noService, .tableFull, .invalid] { report.count(o) }
        #expect(report.restored == 1 && report.dropped == 4)
    }

    @Test func aSYNProxiedConnectionKeepsItsDelta() {
        var svc = service(.nat)
        svc.synproxy = true
        var old = Harness([svc])
        let (s4, _) = journaled(&old)
        // A connection as the SYN proxy leaves it once the real server answered.
        let r = JournalRecord(
            sync: SyncRecord(
                proto: 6, flags: 0, state: 1, clientPort: 40000, virtualPort: 80, realPort: 8080, timeout: 900, client: client, virtual: vip,
                real: rs),
            synproxySequence: 0x1000, writtenAt: old.now)
        #expect(old.director.restore(r, now: old.now) == .created)
        let c = old.director.v4.table.entries.first { $0.proto == 6 }!
        #expect(c.flags.contains(.synproxy) && !c.flags.contains(.synproxyPending) && c.synproxySequence == 0x1000)
        #expect(s4.records.first?.synproxySequence == 0x1000)
    }
}
