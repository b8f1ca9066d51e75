using Drydock.Nbd.Protocol;

namespace Drydock.Nbd;

/// <summary>Base type of every error raised by the NBD library.</summary>
public class NbdException : Exception
{
    /// <summary>Creates an error with a message.</summary>
    /// <param name="message">What went wrong, and where.</param>
    public NbdException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an error with a message and a cause.</summary>
    /// <param name="message">What went wrong, and where.</param>
    /// <param name="innerException">The cause.</param>
    public NbdException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// The peer broke the protocol. The connection is dead: every request in flight on it fails with this error.
/// </summary>
public sealed class NbdProtocolException : NbdException
{
    /// <summary>Creates a protocol violation error.</summary>
    /// <param name="message">What the peer sent and why it is invalid.</param>
    public NbdProtocolException(string message)
        : base(message)
    {
    }
}

/// <summary>The server refused an option during negotiation (unknown export, TLS required, policy...).</summary>
public sealed class NbdOptionException : NbdException
{
    /// <summary>Creates an option refusal error.</summary>
    /// <param name="option">The option that was refused.</param>
    /// <param name="replyType">The error reply type the server sent.</param>
    /// <param name="serverMessage">The server's message, possibly empty.</param>
    /// <param name="message">A description for people.</param>
    public NbdOptionException(NbdOption option, NbdOptionReplyType replyType, string serverMessage, string message)
        : base(message)
    {
        Option = option;
        ReplyType = replyType;
        ServerMessage = serverMessage;
    }

    /// <summary>The option that was refused.</summary>
    public NbdOption Option { get; }

    /// <summary>The error reply type.</summary>
    public NbdOptionReplyType ReplyType { get; }

    /// <summary>The server's own message (may be empty).</summary>
    public string ServerMessage { get; }
}

/// <summary>A request failed with an error the server reported. The connection stays usable.</summary>
public sealed class NbdRequestException : NbdException
{
    /// <summary>Creates a request error.</summary>
    /// <param name="command">The command that failed.</param>
    /// <param name="offset">The request offset.</param>
    /// <param name="length">The request length.</param>
    /// <param name="error">The error code the server sent.</param>
    /// <param name="serverMessage">The server's message, possibly empty.</param>
    /// <param name="errorOffset">The offset the server named in an error chunk, if any.</param>
    public NbdRequestException(NbdCommand command, ulong offset, ulong length, NbdErrorCode error, string serverMessage, ulong? errorOffset)
        : base(Describe(command, offset, length, error, serverMessage, errorOffset))
    {
        Command = command;
        Offset = offset;
        Length = length;
        Error = error;
        ServerMessage = serverMessage;
        ErrorOffset = errorOffset;
    }

    /// <summary>The command that failed.</summary>
    public NbdCommand Command { get; }

    /// <summary>The request offset.</summary>
    public ulong Offset { get; }

    /// <summary>The request length.</summary>
    public ulong Length { get; }

    /// <summary>The error code the server sent.</summary>
    public NbdErrorCode Error { get; }

    /// <summary>The server's own message (may be empty).</summary>
    public string ServerMessage { get; }

    /// <summary>The exact offset of the failure when the server named one (NBD_REPLY_TYPE_ERROR_OFFSET).</summary>
    public ulong? ErrorOffset { get; }

    private static string Describe(NbdCommand command, ulong offset, ulong length, NbdErrorCode error, string serverMessage, ulong? errorOffset)
    {
        var where = errorOffset is { } at
            ? $"at offset {at}"
            : $"in range [{offset}, {offset + length})";
        var text = $"NBD {NbdNames.Command(command)} failed {where}: {NbdNames.Error(error)}";
        return serverMessage.Length > 0 ? $"{text} ({serverMessage})" : text;
    }
}

/// <summary>The connection to the server failed or was closed; requests in flight did not complete.</summary>
public sealed class NbdConnectionException : NbdException
{
    /// <summary>Creates a connection error.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="innerException">The cause, if any.</param>
    public NbdConnectionException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}

/// <summary>The server did not answer within the configured time. The connection is closed.</summary>
public sealed class NbdTimeoutException : NbdException
{
    /// <summary>Creates a timeout error.</summary>
    /// <param name="message">What timed out.</param>
    public NbdTimeoutException(string message)
        : base(message)
    {
    }
}

/// <summary>TLS was required but could not be negotiated, or the peer's certificate was refused.</summary>
public sealed class NbdTlsException : NbdException
{
    /// <summary>Creates a TLS error.</summary>
    /// <param name="message">What failed.</param>
    /// <param name="innerException">The cause, if any.</param>
    public NbdTlsException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}
