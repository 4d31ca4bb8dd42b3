import LVSPacket

/// DPVS's passive dest-check, seen from the data path: a NAT or FULLNAT
/// connection whose client has sent its SYN `synsBeforeSuspect` times with
/// no packet back from the real server says that server does not answer;
/// a SYN-ACK from a server under suspicion says it answers again. The
/// engine only reports; the control plane decides (and backs off).
public struct PassiveEvent: Sendable, Hashable {
    public enum Kind: Sendable, Hashable { case unanswered, answered }
    public var kind: Kind
    public var service: ServiceKey
    public var address: IPAddress
    public var port: UInt16
}

/// Events between ticks, in an array allocated once (a packet never
/// allocates); more than it holds are dropped, the next SYN reports again.
struct PassiveEvents: Sendable {
    struct Event: Sendable {
        var kind: PassiveEvent.Kind
        var service: UInt16
        var destination: UInt16
    }

    static var capacity: Int { 64 }
    var events = [Event](repeating: Event(kind: .answered, service: 0, destination: 0), count: capacity)
    var count = 0

    mutating func push(_ kind: PassiveEvent.Kind, service: Int, destination: Int) {
        guard count < Self.capacity else { return }
        events[count] = Event(kind: kind, service: UInt16(service), destination: UInt16(destination))
        count &+= 1
    }
}

extension Director {
    /// SYNs without an answer that make a server suspect (the client's
    /// retransmissions: about 3 s with Linux's 1 s initial RTO).
    public static var synsBeforeSuspect: UInt32 { 3 }

    /// On by default, as DPVS's dest-check.
    public var passiveCheck: Bool {
        get { shared.passiveCheck }
        set { shared.passiveCheck = newValue }
    }

    /// Hands over what the data path saw since the last call.
    public mutating func takePassiveEvents(_ body: (PassiveEvent) -> Void) {
        for e in shared.passiveEvents.events.prefix(shared.passiveEvents.count) {
            let s = Int(e.service)
            let d = Int(e.destination)
            body(
                PassiveEvent(
                    kind: e.kind, service: shared.services[s].configuration.key,
                    address: shared.services[s].destinations[d].address, port: shared.services[s].destinations[d].port))
        }
        shared.passiveEvents.count = 0
    }

    /// A server under suspicion reports its next SYN-ACK.
    public mutating func setSuspect(_ key: ServiceKey, address: IPAddress, port: UInt16, _ suspect: Bool) {
        guard let s = shared.serviceByKey[key], let d = shared.services[s].slotByKey[RealServerKey(address: address, port: port)] else { return }
        shared.services[s].destinations[d].suspect = suspect
    }
}

extension FamilyPlane {
    /// A client SYN on a connection still in SYN_RECV.
    mutating func notePassiveSYN(_ i: Int, shared: inout DirectorShared) {
        let c = table[i]
        guard c.inPackets == Director.synsBeforeSuspect, c.packets == c.inPackets, c.flags.contains(.replyIndexed) else { return }
        shared.passiveEvents.push(.unanswered, service: Int(c.service), destination: Int(c.destination))
    }

    /// A SYN-ACK from a real server.
    mutating func notePassiveAnswer(_ i: Int, shared: inout DirectorShared) {
        let s = Int(table[i].service)
        let d = Int(table[i].destination)
        guard shared.services[s].destinations[d].suspect else { return }
        shared.services[s].destinations[d].suspect = false
        shared.passiveEvents.push(.answered, service: s, destination: d)
    }
}
