import NIOCore

/// SMTP_CHECK's conversation, as keepalived's: the greeting (220), `HELO`
/// with the checker's `helo_name` (250), then `QUIT`. Each command goes out
/// once the server's whole reply to the previous step is in (a server may
/// refuse a client that speaks before its greeting); the transcript is read
/// when the server closes.
public struct SMTPDialog: Sendable {
    let commands: [String]

    init(helo: String) { commands = ["HELO \(helo)\r\n", "QUIT\r\n"] }

    /// The reply codes of a transcript, one per complete reply (the last
    /// line of a multi-line reply is "NNN text").
    static func replies(_ transcript: [UInt8]) -> [Int] {
        String(decoding: transcript, as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: true).compactMap { line in
            let bytes = Array(line.utf8)
            guard bytes.count >= 3, let code = Int(String(decoding: bytes[0..<3], as: UTF8.self)) else { return nil }
            return bytes.count == 3 || bytes[3] == UInt8(ascii: " ") ? code : nil
        }
    }

    /// Up when the greeting was 220 and HELO's answer 250.
    static func verdict(_ transcript: [UInt8]) -> Result<Void, ProbeFailure> {
        let codes = replies(transcript)
        guard let greeting = codes.first else { return .failure(ProbeFailure(description: "no greeting")) }
        guard greeting == 220 else { return .failure(ProbeFailure(description: "greeting \(greeting), expected 220")) }
        guard codes.count >= 2 else { return .failure(ProbeFailure(description: "no answer to HELO")) }
        guard codes[1] == 250 else { return .failure(ProbeFailure(description: "HELO answered \(codes[1]), expected 250")) }
        return .success(())
    }

    /// Sends the next command after each complete reply; passes everything on.
    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let dialog: SMTPDialog
        var pending: [UInt8] = []
        var next = 0

        init(_ dialog: SMTPDialog) { self.dialog = dialog }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            pending += b.readBytes(length: b.readableBytes) ?? []
            // A reply is complete at a line "NNN text\r\n" (not "NNN-text").
            while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[..<end]
                pending.removeSubrange(...end)
                guard line.count >= 3, line.count == 3 || line[line.startIndex + 3] != UInt8(ascii: "-") else { continue }
                if next < dialog.commands.count {
                    context.writeAndFlush(NIOAny(ByteBuffer(string: dialog.commands[next])), promise: nil)
                    next += 1
                }
            }
            context.fireChannelRead(data)
        }
    }
}
