/// A PROXY protocol header (HAProxy's proxy-protocol.txt) for one TCP
/// connection: version 1 is a text line, version 2 a binary block. Built on
/// the stack, once per connection, with no allocation.
public struct ProxyHeader {
    /// The longest version 1 header: "PROXY TCP6 " and two full IPv6
    /// addresses, two ports, separators and CRLF (104 bytes; the
    /// specification's bound is 107).
    public static var capacity: Int { 108 }
    /// Version 2's twelve-byte signature.
    public static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// How version 1's line starts.
    static let textPrefix: [UInt8] = Array("PROXY ".utf8)

    public private(set) var text = ShortText()
    public var count: Int { text.count }

    /// The header naming `source`:`sourcePort` (the client) and
    /// `destination`:`destinationPort` (the virtual service).
    public init<A: IPAddressProtocol>(version: Int, source: A, destination: A, sourcePort: UInt16, destinationPort: UInt16) {
        let v6 = A.byteCount == 16
        if version == 1 {
            text.put("PROXY TCP")
            text.put(v6 ? UInt8(ascii: "6") : UInt8(ascii: "4"))
            text.put(UInt8(ascii: " "))
            text.putText(source)
            text.put(UInt8(ascii: " "))
            text.putText(destination)
            text.put(UInt8(ascii: " "))
            text.putDecimal(UInt32(sourcePort))
            text.put(UInt8(ascii: " "))
            text.putDecimal(UInt32(destinationPort))
            text.put("\r\n")
        } else {
            for b in Self.signature { text.put(b) }
            text.put(0x21)  // version 2, PROXY
            text.put(v6 ? 0x21 : 0x11)  // TCP over IPv6 or IPv4
            let length = 2 &* A.byteCount &+ 4
            text.put(UInt8(truncatingIfNeeded: length &>> 8))
            text.put(UInt8(truncatingIfNeeded: length))
            text.putBinary(source)
            text.putBinary(destination)
            text.put(UInt8(truncatingIfNeeded: sourcePort &>> 8))
            text.put(UInt8(truncatingIfNeeded: sourcePort))
            text.put(UInt8(truncatingIfNeeded: destinationPort &>> 8))
            text.put(UInt8(truncatingIfNeeded: destinationPort))
        }
    }

    /// Whether `payload` starts with a header of `version`: "PROXY " or the signature.
    public static func starts(_ payload: Span<UInt8>, version: Int) -> Bool {
        let prefix = version == 1 ? textPrefix : signature
        guard payload.count >= prefix.count else { return false }
        for i in prefix.indices where payload[i] != prefix[i] { return false }
        return true
    }

    /// Copies the header into `b` at `offset`.
    public func store(_ b: inout MutableSpan<UInt8>, at offset: Int) { text.store(&b, at: offset) }

    public var array: [UInt8] { text.array }
}

/// Up to 108 bytes built on the stack, without allocation: a PROXY protocol
/// header, the FTP helper's rewritten reply, an address's text.
public struct ShortText {
    public private(set) var bytes = InlineArray<108, UInt8>(repeating: 0)
    public private(set) var count = 0

    public init() {}

    /// An address's text (dotted decimal, RFC 5952's IPv6 text).
    public init<A: IPAddressProtocol>(address a: A) { putText(a) }

    /// Copies the bytes into `b` at `offset`.
    public func store(_ b: inout MutableSpan<UInt8>, at offset: Int) {
        for i in 0..<count { b[offset &+ i] = bytes[i] }
    }

    /// Whether `s` holds exactly these bytes.
    public func equals(_ s: Span<UInt8>) -> Bool {
        guard s.count == count else { return false }
        for i in 0..<count where s[i] != bytes[i] { return false }
        return true
    }

    public var array: [UInt8] { (0..<count).map { bytes[$0] } }

    /// A byte more; beyond the capacity, nothing.
    public mutating func put(_ byte: UInt8) {
        guard count < 108 else { return }
        bytes[count] = byte
        count &+= 1
    }

    public mutating func put(_ text: StaticString) {
        let n = text.utf8CodeUnitCount
        // `unsafe`: a StaticString's storage is a constant of that many bytes for the program's life.
        for i in 0..<n { put(unsafe text.utf8Start[i]) }
    }

    public mutating func putDecimal(_ value: UInt32) {
        var divisor: UInt32 = 1
        while value / divisor >= 10 { divisor &*= 10 }
        while divisor > 0 {
            put(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value / divisor % 10))
            divisor /= 10
        }
    }

    public mutating func putHex(_ value: UInt16) {
        var shift = 12
        while shift > 0 && value &>> UInt16(shift) == 0 { shift &-= 4 }
        while shift >= 0 {
            let d = UInt8(truncatingIfNeeded: value &>> UInt16(shift) & 0xF)
            put(d < 10 ? UInt8(ascii: "0") &+ d : UInt8(ascii: "a") &+ d &- 10)
            shift &-= 4
        }
    }

    public mutating func putBinary<A: IPAddressProtocol>(_ a: A) {
        let words = Self.words(a)
        for i in 0..<A.byteCount / 2 {
            put(UInt8(truncatingIfNeeded: words[i] &>> 8))
            put(UInt8(truncatingIfNeeded: words[i]))
        }
    }

    /// Dotted decimal, or RFC 5952's IPv6 text: lower-case hex groups, the
    /// longest run (the first of equals) of two or more zero groups as "::".
    public mutating func putText<A: IPAddressProtocol>(_ a: A) {
        let words = Self.words(a)
        if A.byteCount == 4 {
            for i in 0..<4 {
                if i > 0 { put(UInt8(ascii: ".")) }
                let w = words[i / 2]
                putDecimal(UInt32(i % 2 == 0 ? w &>> 8 : w & 0xFF))
            }
            return
        }
        var bestStart = -1
        var bestLength = 1
        var i = 0
        while i < 8 {
            var j = i
            while j < 8 && words[j] == 0 { j &+= 1 }
            if j &- i > bestLength {
                bestStart = i
                bestLength = j &- i
            }
            i = j == i ? i &+ 1 : j
        }
        i = 0
        while i < 8 {
            if i == bestStart {
                put(UInt8(ascii: ":"))
                if i == 0 { put(UInt8(ascii: ":")) }
                i &+= bestLength
                continue
            }
            putHex(words[i])
            if i < 7 { put(UInt8(ascii: ":")) }
            i &+= 1
        }
    }

    /// FTP's "h1,h2,h3,h4,p1,p2" (PORT, PASV): an IPv4 address and a port.
    public mutating func putHostPort<A: IPAddressProtocol>(_ a: A, _ port: UInt16) {
        let words = Self.words(a)
        for i in 0..<4 {
            putDecimal(UInt32(i % 2 == 0 ? words[i / 2] &>> 8 : words[i / 2] & 0xFF))
            put(UInt8(ascii: ","))
        }
        putDecimal(UInt32(port &>> 8))
        put(UInt8(ascii: ","))
        putDecimal(UInt32(port & 0xFF))
    }

    /// The address as 16-bit words, most significant first.
    static func words<A: IPAddressProtocol>(_ a: A) -> InlineArray<8, UInt16> {
        var raw = InlineArray<16, UInt8>(repeating: 0)
        var span = raw.mutableSpan
        a.store(&span, at: 0)
        var w = InlineArray<8, UInt16>(repeating: 0)
        for i in 0..<A.byteCount / 2 { w[i] = UInt16(span[2 &* i]) &<< 8 | UInt16(span[2 &* i &+ 1]) }
        return w
    }
}
