import LVSPacket

/// The addresses lvsd answers for and how its workers share the flows to
/// them: what the kernel-side programs are told (the XDP redirect, the
/// workers' steering, the nftables filter that keeps the kernel off).
public struct Ownership: Sendable, Equatable {
    /// VIPs and FULLNAT local addresses.
    public var owned: [IPAddress]
    /// NAT real servers, whose replies lvsd rewrites.
    public var replySources: Set<IPAddress>
    /// FULLNAT local addresses: a reply to one belongs to the worker whose
    /// slice of the local ports holds its destination port.
    public var localAddresses: Set<IPAddress> = []
    /// The shortest persistence netmask of the persistent services, per
    /// family: one client's connections must meet one worker (and its
    /// template), so the workers are chosen by the client's prefix alone.
    public var clientPrefix4: Int?
    public var clientPrefix6: Int?

    public init(owned: [IPAddress] = [], replySources: Set<IPAddress> = []) {
        self.owned = owned
        self.replySources = replySources
    }
}

extension Ownership {
    /// The worker the steering programs give a client's frames to a VIP
    /// (bpf/lvs_steering.h, the same arithmetic): for what reaches lvsd on
    /// no worker's ring, such as a connection from the sync master.
    public func worker(client: IPAddress, port: UInt16, workers: Int) -> Int {
        guard workers > 1 else { return 0 }
        var key = client.mappedBytes
        let prefix = client.isIPv6 ? clientPrefix6 : clientPrefix4
        var x: UInt32 = 0
        if let prefix {
            // An IPv4 netmask counts from the address, inside the mapped key.
            let bits = (client.isIPv6 ? 0 : 96) + prefix
            for i in 0..<16 where bits - i * 8 < 8 {
                let keep = bits - i * 8
                key[i] &= keep <= 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
            }
        } else {
            x = UInt32(port)
        }
        // The key's four words as the BPF program loads them (little-endian, as the machines lvsd runs on).
        for w in 0..<4 {
            x ^= UInt32(key[w * 4]) | UInt32(key[w * 4 + 1]) << 8 | UInt32(key[w * 4 + 2]) << 16 | UInt32(key[w * 4 + 3]) << 24
        }
        x &*= 0x9E37_79B1
        x ^= x >> 16
        x &*= 0x85EB_CA6B
        x ^= x >> 13
        return Int((UInt64(x) &* UInt64(workers)) >> 32)
    }

    /// The worker whose slice of the local ports holds `port` (FULLNAT).
    public static func worker(localPort port: UInt16, workers: Int) -> Int {
        guard workers > 1 else { return 0 }
        return (Int(port) & FullNATPortPool<IPv4Address>.workerBits(workers: workers)) % workers
    }
}
