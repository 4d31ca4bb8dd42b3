import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// Connection sync inside the engine: which packets make a master queue a
/// record (the kernel's `sync_threshold` 3 and `sync_period` 50, forced
/// state changes), and what a backup builds from one.
@Suite(.serialized) struct SyncTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let rs = ip("198.19.0.2")
    let lip = ip("198.19.0.100")

    func service(_ m: ForwardingMethod, persistence: UInt32? = nil) -> VirtualServiceConfiguration {
        VirtualServiceConfiguration(
            key: .address(.tcp, vip, 80), scheduler: "rr", persistence: persistence,
            realServers: [RealServerConfiguration(address: rs, port: m == .directRouting ? 80 : 8080, method: m)],
            localAddresses: m == .fullNAT ? [lip] : [])
    }

    func fromClient(_ h: Harness, port: UInt16 = 40000, flags: UInt8, payload: [UInt8] = []) -> [UInt8] {
        h.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: port, dport: 80, flags: flags, payload: payload))
    }

    func fromReal(to dst: IPAddress, port: UInt16, flags: UInt8) -> [UInt8] {
        FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value).frame(src: rs, dst: dst, FrameBuilder.tcp(sport: 8080, dport: port, flags: flags))
    }

    func drain(_ h: inout Harness) -> [SyncRecord] {
        var out: [SyncRecord] = []
        h.director.takeSyncRecords { out.append($0) }
        return out
    }

    @Test func aMasterSendsTheThirdClientPacketThenEveryFiftiethAndForcedStateChanges() {
        var h = Harness([service(.nat)])
        h.director.setSyncing(true)
        _ = h.send(fromClient(h, flags: TCPFlags.syn))
        _ = h.send(fromReal(to: client, port: 40000, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        _ = h.send(fromClient(h, flags: TCPFlags.ack))
        #expect(drain(&h).isEmpty)  // SYN_RECV, then ESTABLISHED at the 2nd client packet: not yet
        _ = h.send(fromClient(h, flags: TCPFlags.ack | TCPFlags.psh, payload: [1]))
        let first = drain(&h)
        #expect(
            first == [
                SyncRecord(
                    proto: 6, flags: 0, state: 1, clientPort: 40000, virtualPort: 80, realPort: 8080, timeout: 900,
                    client: client, virtual: vip, real: rs)
            ])
        for _ in 4...52 { _ = h.send(fromClient(h, flags: TCPFlags.ack)) }
        #expect(drain(&h).isEmpty)
        _ = h.send(fromClient(h, flags: TCPFlags.ack))  // the 53rd
        #expect(drain(&h).count == 1)
        // The client's FIN moves ESTABLISHED to CLOSE_WAIT: sent at once.
        _ = h.send(fromClient(h, flags: TCPFlags.fin | TCPFlags.ack))
        let fin = drain(&h)
        #expect(fin.count == 1 && fin[0].state == UInt16(ConnectionState.closeWait.rawValue) && fin[0].timeout == 60)
        #expect(fin[0].flags & SyncConnectionFlags.inactive != 0)
        // The fast path counts client packets too (UDP: every packet takes it once established).
        var u = Harness([
            VirtualServiceConfiguration(
                key: .address(.udp, vip, 53), scheduler: "rr",
                realServers: [RealServerConfiguration(address: rs, port: 53, method: .directRouting)])
        ])
        u.director.setSyncing(true)
        for _ in 1...3 { _ = u.send(u.builder.frame(src: client, dst: vip, FrameBuilder.udp(sport: 5000, dport: 53))) }
        let udp = drain(&u)
        #expect(udp.count == 1 && udp[0].state == 0 && udp[0].proto == 17 && udp[0].timeout == 300)
        #expect(udp[0].flags == UInt32(ForwardingMethod.directRouting.rawValue) | SyncConnectionFlags.noOutput | SyncConnectionFlags.inactive)
    }

    @Test func aSyncedNATConnectionForwardsBothWaysOnTheBackup() {
        var h = Harness([service(.nat)])
        let r = SyncRecord(
            proto: 6, flags: 0, state: 1, clientPort: 40000, virtualPort: 80, realPort: 8080, timeout: 900,
            client: client, virtual: vip, real: rs)
        #expect(h.director.applySync(r, now: h.now) == .created)
        #expect(h.director.applySync(r, now: h.now) == .updated)
        #expect(h.director.service(.address(.tcp, vip, 80))!.destinations[0].activeConnections == 1)
        let (v, out) = h.send(fromClient(h, flags: TCPFlags.ack | TCPFlags.psh, payload: [1]))
        #expect(v == .transmit(interface: 2) && field(out, 30, 4) == [198, 19, 0, 2] && be16(out, 36) == 8080)
        let (v2, back) = h.send(fromReal(to: client, port: 40000, flags: TCPFlags.ack), interface: 2)
        #expect(v2 == .transmit(interface: 1) && field(back, 26, 4) == [198, 18, 0, 10] && be16(back, 34) == 80)
        #expect(FrameBuilder.checksumsValid(back))
        // The same record saying inactive moves the count; unknown services and servers are refused.
        var closing = r
        closing.flags = SyncConnectionFlags.inactive
        closing.state = UInt16(ConnectionState.timeWait.rawValue)
        #expect(h.director.applySync(closing, now: h.now) == .updated)
        #expect(h.director.service(.address(.tcp, vip, 80))!.destinations[0].inactiveConnections == 1)
        var other = r
        other.virtualPort = 81
        #expect(h.director.applySync(other, now: h.now) == .noService)
        other = r
        other.real = ip("198.19.0.9")
        #expect(h.director.applySync(other, now: h.now) == .noServer)
        other = r
        other.state = 42
        #expect(h.director.applySync(other, now: h.now) == .invalid)
    }

    /// A connection built from a message binds as any other (ip_vs_bind_dest):
    /// at its server's upper threshold the server turns OVERLOAD.
    @Test func aSyncedConnectionCountsTowardsTheUpperThreshold() {
        var svc = service(.nat)
        svc.realServers[0].upperThreshold = 1
        var h = Harness([svc])
        let r = SyncRecord(
            proto: 6, flags: 0, state: 1, clientPort: 40000, virtualPort: 80, realPort: 8080, timeout: 900,
            client: client, virtual: vip, real: rs)
        #expect(h.director.applySync(r, now: h.now) == .created)
        #expect(h.director.service(.address(.tcp, vip, 80))!.destinations[0].overloaded)
        // A new client finds no server that will take it.
        let (v, _) = h.send(fromClient(h, port: 40001, flags: TCPFlags.syn))
        #expect(v == .drop(.noRealServer))
    }

    @Test func fullNATSyncCarriesTheLocalAddressAndTakesItsPort() {
        var master = Harness([service(.fullNAT)])
        master.director.setSyncing(true)
        _ = master.send(fromClient(master, flags: TCPFlags.syn))
        let lport = master.director.v4.table.entries.first { $0.proto == 6 }!.localPort
        _ = master.send(fromReal(to: lip, port: lport, flags: TCPFlags.syn | TCPFlags.ack), interface: 2)
        _ = master.send(fromClient(master, flags: TCPFlags.ack))
        _ = master.send(fromClient(master, flags: TCPFlags.ack | TCPFlags.psh, payload: [1]))
        let records = drain(&master)
        #expect(records.count == 1 && records[0].local == lip && records[0].localPort == lport && records[0].flags == 5)

        var backup = Harness([service(.fullNAT)])
        let before = backup.director.v4.pools[0]!.available(real: IPv4Address("198.19.0.2")!, port: 8080)
        #expect(backup.director.applySync(records[0], now: backup.now) == .created)
        #expect(backup.director.v4.pools[0]!.available(real: IPv4Address("198.19.0.2")!, port: 8080) == before - 1)
        let (v, back) = backup.send(fromReal(to: lip, port: lport, flags: TCPFlags.ack), interface: 2)
        #expect(v == .transmit(interface: 1) && field(back, 26, 4) == [198, 18, 0, 10] && field(back, 30, 4) == [198, 18, 0, 100])
        #expect(be16(back, 34) == 80 && be16(back, 36) == 40000 && FrameBuilder.checksumsValid(back))
        var bare = records[0]
        bare.local = nil
        var fresh = Harness([service(.fullNAT)])
        #expect(fresh.director.applySync(bare, now: 0) == .invalid)
    }

    @Test func templatesGoFirstAndControlTheirConnectionsOnTheBackup() {
        var master = Harness([service(.directRouting, persistence: 300)])
        master.director.setSyncing(true)
        for f in [TCPFlags.syn, TCPFlags.ack, TCPFlags.ack] { _ = master.send(fromClient(master, flags: f)) }
        let records = drain(&master)
        #expect(records.count == 2 && records[0].isTemplate && records[0].timeout == 300 && records[0].clientPort == 0)
        #expect(!records[1].isTemplate && records[1].flags & SyncConnectionFlags.noOutput != 0)
        var backup = Harness([service(.directRouting, persistence: 300)])
        for r in records { #expect(backup.director.applySync(r, now: backup.now) == .created) }
        let t = backup.director.v4.table.entries.firstIndex { $0.flags.contains(.template) }!
        #expect(backup.director.v4.table[t].controller == 1)
        #expect(backup.director.service(.address(.tcp, vip, 80))!.destinations[0].persistentConnections == 1)
        // A new connection from the same client follows the template, as on the master.
        let (v, _) = backup.send(fromClient(backup, port: 40001, flags: TCPFlags.syn))
        #expect(v == .transmit(interface: 2) && backup.director.v4.table[t].controller == 2)
    }

    @Test func standbyAddressesAreNotAnsweredExtraOnesAre() {
        var h = Harness([service(.nat)])
        func arp(_ target: [UInt8]) -> [UInt8] {
            [
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0xAA, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1,
                2, 0, 0, 0, 0, 0xAA, 198, 18, 0, 100, 0, 0, 0, 0, 0, 0,
            ] + target
        }
        #expect(h.send(arp([198, 18, 0, 10])).0 == .transmit(interface: 1))
        h.director.setOwnership(extra: [ip("198.18.0.3")], standby: [vip])
        #expect(h.send(arp([198, 18, 0, 10])).0 == .pass)
        #expect(h.send(arp([198, 18, 0, 3])).0 == .transmit(interface: 1))
        #expect(Set(h.director.ownedAddresses) == [ip("198.18.0.3")])
        // A reload keeps the policy.
        h.director.apply(DirectorConfiguration(services: [service(.nat)], interfaces: h.director.shared.interfaces, routes: h.director.shared.routes))
        #expect(Set(h.director.ownedAddresses) == [ip("198.18.0.3")])
        h.director.setOwnership(extra: [], standby: [])
        #expect(Set(h.director.ownedAddresses) == [vip])
    }
}
