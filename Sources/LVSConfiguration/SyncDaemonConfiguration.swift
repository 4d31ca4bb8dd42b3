import LVSCore
import LVSPacket
import LVSSystem

/// `--start-daemon` and its options, as ipvsadm takes them.
public struct SyncDaemonConfiguration: Sendable, Hashable, Codable {
    public enum Role: String, Sendable, Hashable, Codable { case master, backup }
    public var role: Role
    public var interface: String
    public var syncID: UInt8
    public var group: IPAddress
    public var port: UInt16
    public var ttl: UInt8
    /// 0: the interface's MTU less 28, at most 1472 (the kernel's choice).
    public var maxLength: Int

    /// The kernel's defaults: 224.0.0.81, port 8848.
    public static let defaultGroup = IPAddress.v4(IPv4Address(0xE000_0051))
    public static let defaultPort: UInt16 = 8848

    public init(
        role: Role = .master, interface: String = "eth0", syncID: UInt8 = 0, group: IPAddress = SyncDaemonConfiguration.defaultGroup,
        port: UInt16 = SyncDaemonConfiguration.defaultPort, ttl: UInt8 = 1, maxLength: Int = 0
    ) {
        self.role = role
        self.interface = interface
        self.syncID = syncID
        self.group = group
        self.port = port
        self.ttl = ttl
        self.maxLength = maxLength
    }
}
