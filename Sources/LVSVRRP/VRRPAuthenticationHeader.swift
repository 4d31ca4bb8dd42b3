import Crypto
import LVSConfiguration

/// keepalived's `auth_type AH`: VRRP version 2 over IPv4 behind an IPsec
/// authentication header (RFC 2402) that no security association backs.
/// The SPI is the sender's address, the sequence number counts
/// advertisements, and the ICV is HMAC-MD5-96 keyed with the 8-byte
/// password over the IPv4 header (TOS, fragment field and checksum zeroed,
/// and the TTL too for unicast peers), the header with its ICV zeroed, and
/// the advertisement. keepalived checks every field of the IPv4 header it
/// does not zero, so the identification must be non-zero (else the kernel
/// picks one after the ICV is computed).
public enum VRRPAuthenticationHeader {
    public static let protocolNumber: UInt8 = 51
    static let length = 24

    /// `plain` (an IPv4 VRRP packet with a 20-byte header, as
    /// `VRRPAdvertisement.encode` makes it) with the header inserted.
    public static func seal(_ plain: [UInt8], key: [UInt8], sequence: UInt32, unicast: Bool) -> [UInt8] {
        var p = Array(plain[0..<20])
        let total = plain.count + length
        p[2] = UInt8(total >> 8)
        p[3] = UInt8(total & 0xFF)
        p[9] = protocolNumber
        p += [VRRPAdvertisement.protocolNumber, 4, 0, 0] + Array(plain[12..<16]) + VRRPAdvertisement.be32(sequence) + [UInt8](repeating: 0, count: 12)
        p += plain[20...]
        let icv = self.icv(p, key: key, unicast: unicast)
        p.replaceSubrange(32..<44, with: icv)
        p[10] = 0
        p[11] = 0
        let h = VRRPAdvertisement.checksum(Array(p[0..<20]), pseudo: nil)
        p[10] = UInt8(h >> 8)
        p[11] = UInt8(h & 0xFF)
        return p
    }

    public enum Failure: Error, Equatable {
        case malformed, notVRRP, integrity, spi
    }

    /// A received IPv4 packet of protocol 51 as the plain VRRP packet it
    /// carries, and its sequence number, once its ICV and SPI hold.
    public static func open(_ packet: [UInt8], key: [UInt8], unicast: Bool) throws(Failure) -> (plain: [UInt8], sequence: UInt32) {
        guard packet.count >= 20, packet[0] >> 4 == 4, packet[9] == protocolNumber else { throw .malformed }
        let ihl = Int(packet[0] & 0x0F) * 4
        let total = min(packet.count, Int(packet[2]) << 8 | Int(packet[3]))
        guard ihl >= 20, total >= ihl + length + 8 else { throw .malformed }
        let p = Array(packet[0..<total])
        guard p[ihl] == VRRPAdvertisement.protocolNumber, p[ihl + 1] == 4 else { throw .notVRRP }
        let expected = icv(p, key: key, unicast: unicast, headerLength: ihl)
        // Compared in full whatever differs first: the time taken says nothing of the key.
        var difference: UInt8 = 0
        for k in 0..<12 { difference |= expected[k] ^ p[ihl + 12 + k] }
        guard difference == 0 else { throw .integrity }
        guard p[ihl + 4..<ihl + 8].elementsEqual(p[12..<16]) else { throw .spi }
        let sequence = VRRPAdvertisement.be32(p, ihl + 8)
        var plain = Array(p[0..<ihl]) + p[(ihl + length)...]
        plain[2] = UInt8(plain.count >> 8)
        plain[3] = UInt8(plain.count & 0xFF)
        plain[9] = VRRPAdvertisement.protocolNumber
        return (plain, sequence)
    }

    /// The ICV of a packet whose IPv4 header is `headerLength` bytes long.
    static func icv(_ p: [UInt8], key: [UInt8], unicast: Bool, headerLength: Int = 20) -> [UInt8] {
        var m = p
        m[1] = 0  // TOS
        m[6] = 0  // fragment field
        m[7] = 0
        if unicast { m[8] = 0 }  // TTL
        m[10] = 0  // checksum
        m[11] = 0
        for k in headerLength + 12..<headerLength + length { m[k] = 0 }
        return Array(HMAC<Insecure.MD5>.authenticationCode(for: m, using: SymmetricKey(data: key)).prefix(12))
    }
}
