#if canImport(Glibc)
import Glibc
#endif
import CLVSLinux
import Dispatch
import LVSCore
import LVSPacket
import Logging
import Synchronization
import LVSDaemon
import LVSControlProtocol
import LVSConfiguration
import LVSSystem

/// lvsd's VRRP: each `vrrp_instance` on its own thread with a raw socket
/// (protocol 112, joined to 224.0.0.18, or ff02::12 from the interface's
/// link-local address for an instance of IPv6 addresses, as keepalived
/// opens it). A master owns its addresses in the engines (answers ARP for
/// them, announces them); a backup leaves them alone. The instance named by
/// `lvs_sync_daemon` drives the sync daemons: master daemon while master,
/// backup daemon otherwise.
public final class VRRPService: Sendable {
    let plane: ControlPlane
    let configuration: HighAvailabilityConfiguration
    let logger: Logger
    let instances: [Instance]
    let states: Mutex<[String: VRRPRouter.State]>
    let started = Atomic<Bool>(false)

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    final class Instance: Sendable {
        let configuration: VRRPInstanceConfiguration
        let fd: Int32
        let primary: IPAddress
        let index: UInt32
        let stop = Atomic<Bool>(false)
        let finished = DispatchSemaphore(value: 0)
        init(_ c: VRRPInstanceConfiguration, fd: Int32, primary: IPAddress, index: UInt32) {
            configuration = c; self.fd = fd; self.primary = primary; self.index = index
        }
        var isIPv6: Bool { primary.isIPv6 }
    }

    /// Opens every instance's socket and leaves every VRRP address unowned
    /// until its instance is master (a director starting up must not take
    /// addresses another one holds).
    public init(plane: ControlPlane, configuration: HighAvailabilityConfiguration, logger: Logger) throws(Failure) {
        self.plane = plane
        self.configuration = configuration
        self.logger = logger
        var made: [Instance] = []
        for c in configuration.instances {
            do throws(Failure) {
                let v6 = c.addresses.first?.isIPv6 ?? false
                guard let primary = Self.primaryAddress(c.interface, ipv6: v6) else {
                    throw Failure(description: "\(c.name): \(c.interface) has no \(v6 ? "IPv6 link-local" : "IPv4") address")
                }
                made.append(Instance(c, fd: try Self.open(c.interface, address: primary), primary: primary, index: if_nametoindex(c.interface)))
            } catch {
                for m in made { close(m.fd) }
                throw error
            }
        }
        instances = made
        states = Mutex(Dictionary(uniqueKeysWithValues: configuration.instances.map { ($0.name, VRRPRouter.State.initialize) }))
        publishOwnership()
        plane.vrrp.withLock { s in
            s = made.map { i in (Self.status(i.configuration, state: .initialize, master: nil, transitions: 0), MonotonicClock.milliseconds()) }
        }
    }

    public func start() {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for i in instances {
            DispatchQueue(label: "lvsd.vrrp.\(i.configuration.name)").async { self.run(i) }
        }
    }

    /// Masters resign (priority 0, so that a backup takes over at once) and
    /// every instance's `notify_stop` runs.
    public func stop() {
        for i in instances { i.stop.store(true, ordering: .relaxed) }
        let running = started.load(ordering: .acquiring)
        for i in instances {
            if running { i.finished.wait() }
            close(i.fd)
        }
    }

    func run(_ i: Instance) {
        var router = VRRPRouter(i.configuration, primaryAddress: i.primary)
        var transitions: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 2048)
        var trackedUp = true
        var lastTrackCheck: UInt64 = 0
        var warnedVersion = false
        func perform(_ actions: [VRRPRouter.Action]) {
            for a in actions {
                switch a {
                case .advertise(let priority):
                    send(i, router.advertisement(priority: priority))
                case .enter(let s):
                    transitions += 1
                    entered(i.configuration, s, master: router.master, transitions: transitions)
                }
            }
        }
        perform(router.start(now: MonotonicClock.milliseconds()))
        while !i.stop.load(ordering: .relaxed) {
            var now = MonotonicClock.milliseconds()
            let wait = router.deadline > now ? min(100, router.deadline - now) : 0
            var p = pollfd(fd: i.fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, Int32(wait)) > 0 {
                let received = Self.receive(i, &buffer)
                now = MonotonicClock.milliseconds()
                if let (a, source) = received, a.virtualRouterID == i.configuration.virtualRouterID, source != i.primary {
                    if a.version != i.configuration.version {
                        // Once: a peer of the other version advertises every second.
                        if !warnedVersion {
                            logger.warning("VRRP_Instance(\(i.configuration.name)) advertisements of version \(a.version) from \(source) ignored (vrrp_version \(i.configuration.version))")
                        }
                        warnedVersion = true
                    } else {
                        let before = router.master
                        perform(router.received(a, from: source, now: now))
                        if router.master != before { publishMaster(i.configuration, router.master) }
                    }
                }
            }
            if !i.configuration.trackInterfaces.isEmpty && now &- lastTrackCheck >= 250 {
                lastTrackCheck = now
                let up = i.configuration.trackInterfaces.allSatisfy(Self.isUp)
                if up != trackedUp {
                    trackedUp = up
                    logger.notice("VRRP_Instance(\(i.configuration.name)) tracked interface \(up ? "up" : "down")")
                    perform(up ? router.recover(now: now) : router.fault())
                }
            }
            perform(router.tick(now: now))
        }
        for a in router.shutdown() { if case .advertise(let p) = a { send(i, router.advertisement(priority: p)) } }
        if let script = i.configuration.notifyStop { ShellCommand.spawn(script) }
        i.finished.signal()
    }

    var identification: UInt16 { UInt16(truncatingIfNeeded: MonotonicClock.milliseconds()) }

    /// One advertisement off the socket, or nil for anything else (not VRRP, malformed, a wrong TTL).
    static func receive(_ i: Instance, _ buffer: inout [UInt8]) -> (VRRPAdvertisement, IPAddress)? {
        if !i.isIPv6 {
            let n = buffer.withUnsafeMutableBytes { recv(i.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            return n > 0 ? try? VRRPAdvertisement.decode(Array(buffer[0..<n])) : nil
        }
        var source = [UInt8](repeating: 0, count: 16)
        var hopLimit: Int32 = -1
        let n = buffer.withUnsafeMutableBytes { b in source.withUnsafeMutableBytes { s in
            lvs_recv6(i.fd, b.baseAddress!.assumingMemoryBound(to: UInt8.self), b.count, s.baseAddress!.assumingMemoryBound(to: UInt8.self), &hopLimit)
        } }
        guard n > 0 else { return nil }
        let from = IPv6Address(source.span, at: 0)
        guard let a = try? VRRPAdvertisement.decode6(Array(buffer[0..<n]), source: from, hopLimit: Int(hopLimit)) else { return nil }
        return (a, .v6(from))
    }

    func send(_ i: Instance, _ a: VRRPAdvertisement) {
        let sent: Int
        let length: Int
        switch i.primary {
        case .v4(let source):
            let packet = a.encode(source: source, identification: identification)
            length = packet.count
            var to = sockaddr_in()
            to.sin_family = sa_family_t(AF_INET)
            to.sin_addr.s_addr = VRRPAdvertisement.group.value.bigEndian
            sent = packet.withUnsafeBytes { b in
                withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(i.fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                } }
            }
        case .v6:
            let message = a.message(source: i.primary)
            length = message.count
            var to = Self.socketAddress6(VRRPAdvertisement.group6, index: i.index)
            sent = message.withUnsafeBytes { b in
                withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(i.fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                } }
            }
        }
        if sent != length { logger.warning("VRRP_Instance(\(i.configuration.name)) send: \(String(cString: strerror(errno)))") }
    }

    static func socketAddress6(_ a: IPv6Address, index: UInt32) -> sockaddr_in6 {
        var s = sockaddr_in6()
        s.sin6_family = sa_family_t(AF_INET6)
        let bytes = VRRPAdvertisement.bytes(.v6(a))
        withUnsafeMutableBytes(of: &s.sin6_addr) { for k in 0..<16 { $0[k] = bytes[k] } }
        s.sin6_scope_id = index
        return s
    }

    /// A state change: ownership, the sync daemons, the notify scripts.
    func entered(_ c: VRRPInstanceConfiguration, _ state: VRRPRouter.State, master: IPAddress?, transitions: UInt64) {
        logger.notice("VRRP_Instance(\(c.name)) Entering \(state.rawValue) STATE")
        states.withLock { $0[c.name] = state }
        publishOwnership()
        plane.vrrp.withLock { all in
            if let k = all.firstIndex(where: { $0.status.name == c.name }) {
                all[k] = (Self.status(c, state: state, master: master, transitions: transitions), MonotonicClock.milliseconds())
            }
        }
        if let tie = configuration.sync, tie.instance == c.name || tie.instance == nil {
            let master = state == .master
            try? plane.sync.stop(master ? .backup : .master)
            if let daemon = configuration.syncDaemon(master: master) {
                do { try plane.sync.start(daemon) } catch where error.code != "EEXIST" {
                    logger.error("lvs_sync_daemon: \(error)")
                } catch {}
            }
        }
        let specific: String? = switch state {
        case .master: c.notifyMaster
        case .backup: c.notifyBackup
        case .fault: c.notifyFault
        case .initialize: nil
        }
        if let specific { ShellCommand.spawn(specific) }
        if let notify = c.notify { ShellCommand.spawn("\(notify) INSTANCE \(c.name) \(state.rawValue) \(c.priority)") }
    }

    /// The master a backup hears from (a new one, or the same one again).
    func publishMaster(_ c: VRRPInstanceConfiguration, _ master: IPAddress?) {
        plane.vrrp.withLock { all in
            if let k = all.firstIndex(where: { $0.status.name == c.name }) {
                all[k].status.master = master
            }
        }
    }

    static func status(_ c: VRRPInstanceConfiguration, state: VRRPRouter.State, master: IPAddress?, transitions: UInt64) -> VRRPInstanceStatus {
        VRRPInstanceStatus(name: c.name, interface: c.interface, virtualRouterID: c.virtualRouterID, priority: c.priority, state: state.rawValue,
                           master: master, addresses: c.ownedAddresses, seconds: 0, transitions: transitions)
    }

    /// Every VRRP address is owned; those of instances that are not master
    /// are on standby.
    func publishOwnership() {
        let states = states.withLock { $0 }
        var extra = Set<IPAddress>(), standby = Set<IPAddress>()
        for c in configuration.instances {
            extra.formUnion(c.ownedAddresses)
            if states[c.name] != .master { standby.formUnion(c.ownedAddresses) }
        }
        // An address two instances hold is owned while either is master.
        for c in configuration.instances where states[c.name] == .master { standby.subtract(c.ownedAddresses) }
        for e in plane.engines { e.director.withLock { $0.setOwnership(extra: extra, standby: standby) } }
        plane.noteOwnershipChanged()
    }

    static func isUp(_ interface: String) -> Bool {
        let state = KernelFile.firstLine("/sys/class/net/\(interface)/operstate")
        return state == "up" || state == "unknown"
    }

    /// The interface's IPv4 address, or its IPv6 link-local one (VRRP's source for IPv6).
    static func primaryAddress(_ interface: String, ipv6: Bool) -> IPAddress? {
        var list: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&list) == 0 else { return nil }
        defer { freeifaddrs(list) }
        var p = list
        while let a = p {
            defer { p = a.pointee.ifa_next }
            guard let sa = a.pointee.ifa_addr, String(cString: a.pointee.ifa_name) == interface else { continue }
            if !ipv6 && sa.pointee.sa_family == sa_family_t(AF_INET) {
                let v = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
                return .v4(IPv4Address(UInt32(bigEndian: v)))
            }
            if ipv6 && sa.pointee.sa_family == sa_family_t(AF_INET6) {
                let bytes = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { s in withUnsafeBytes(of: s.pointee.sin6_addr) { Array($0) } }
                let address = IPv6Address(bytes.span, at: 0)
                if address.high >> 54 == 0x3FA { return .v6(address) }  // fe80::/10
            }
        }
        return nil
    }

    static func open(_ interface: String, address: IPAddress) throws(Failure) -> Int32 {
        let index = if_nametoindex(interface)
        guard index != 0 else { throw Failure(description: "no interface \(interface)") }
        let v6 = address.isIPv6
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(VRRPAdvertisement.protocolNumber))
        guard fd >= 0 else { throw Failure(description: "raw socket for VRRP: \(String(cString: strerror(errno)))") }
        func set<T>(_ level: Int32, _ name: Int32, _ value: T, _ what: String) throws(Failure) {
            var v = value
            guard setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<T>.size)) == 0 else {
                let e = errno
                close(fd)
                throw Failure(description: "VRRP socket \(what): \(String(cString: strerror(e)))")
            }
        }
        let name = Array(interface.utf8CString)
        guard name.withUnsafeBufferPointer({ setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, $0.baseAddress, socklen_t($0.count)) }) == 0 else {
            let e = errno
            close(fd)
            throw Failure(description: "VRRP socket SO_BINDTODEVICE \(interface): \(String(cString: strerror(e)))")
        }
        if case .v6(let source) = address {
            var mreq = ipv6_mreq()
            mreq.ipv6mr_multiaddr = socketAddress6(VRRPAdvertisement.group6, index: index).sin6_addr
            mreq.ipv6mr_interface = index
            try set(Int32(IPPROTO_IPV6), IPV6_ADD_MEMBERSHIP, mreq, "IPV6_ADD_MEMBERSHIP")
            try set(Int32(IPPROTO_IPV6), IPV6_MULTICAST_IF, Int32(index), "IPV6_MULTICAST_IF")
            try set(Int32(IPPROTO_IPV6), IPV6_MULTICAST_HOPS, Int32(255), "IPV6_MULTICAST_HOPS")
            try set(Int32(IPPROTO_IPV6), IPV6_MULTICAST_LOOP, Int32(0), "IPV6_MULTICAST_LOOP")
            try set(Int32(IPPROTO_IPV6), IPV6_RECVHOPLIMIT, Int32(1), "IPV6_RECVHOPLIMIT")
            // From the link-local address, as RFC 5798 wants (and the checksum
            // assumes); just after the link comes up it may still be tentative (DAD).
            var local = socketAddress6(source, index: index)
            var rc: Int32 = -1
            for _ in 0..<50 {
                rc = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
                if rc == 0 || errno != EADDRNOTAVAIL { break }
                usleep(100_000)
            }
            guard rc == 0 else {
                let e = errno
                close(fd)
                throw Failure(description: "VRRP socket bind \(address): \(String(cString: strerror(e)))")
            }
            return fd
        }
        var mreq = ip_mreqn()
        mreq.imr_multiaddr.s_addr = VRRPAdvertisement.group.value.bigEndian
        mreq.imr_ifindex = Int32(index)
        try set(Int32(IPPROTO_IP), IP_HDRINCL, Int32(1), "IP_HDRINCL")
        try set(Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, mreq, "IP_ADD_MEMBERSHIP")
        try set(Int32(IPPROTO_IP), IP_MULTICAST_IF, mreq, "IP_MULTICAST_IF")
        try set(Int32(IPPROTO_IP), IP_MULTICAST_LOOP, Int32(0), "IP_MULTICAST_LOOP")
        return fd
    }
}
