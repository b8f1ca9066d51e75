namespace Drydock.Hypervisor.Qemu.Qmp;

/// <summary>A QMP command failed: QEMU answered <c>{"error":{"class":…,"desc":…}}</c>.</summary>
public sealed class QmpException : Exception
{
    /// <summary>Creates the error.</summary>
    /// <param name="command">The command that failed.</param>
    /// <param name="errorClass">QEMU's error class.</param>
    /// <param name="description">QEMU's message.</param>
    /// <param name="endpoint">The monitor, for the message.</param>
    public QmpException(string command, string errorClass, string description, string endpoint)
        : base($"QMP command '{command}' on {endpoint} failed: {errorClass}: {description}")
    {
        Command = command;
        ErrorClass = errorClass;
        Description = description;
    }

    /// <summary>The command that failed.</summary>
    public string Command { get; }

    /// <summary>QEMU's error class (<c>GenericError</c>, <c>CommandNotFound</c>, <c>DeviceNotFound</c>, …).</summary>
    public string ErrorClass { get; }

    /// <summary>QEMU's own message.</summary>
    public string Description { get; }
}

/// <summary>The QMP connection could not be made, or broke: every command in flight fails with this.</summary>
public sealed class QmpConnectionException : IOException
{
    /// <summary>Creates the error.</summary>
    /// <param name="message">What happened, naming the monitor.</param>
    /// <param name="innerException">The cause.</param>
    public QmpConnectionException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}

/// <summary>The QMP server broke the protocol (not JSON, an unknown message, a line too long); the connection is closed.</summary>
public sealed class QmpProtocolException : Exception
{
    /// <summary>Creates the error.</summary>
    /// <param name="message">What the server sent.</param>
    /// <param name="innerException">The cause.</param>
    public QmpProtocolException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}
