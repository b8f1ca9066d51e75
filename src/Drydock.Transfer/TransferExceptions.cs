namespace Drydock.Transfer;

/// <summary>A backup or restore failed; the message names the domain, disk and, where known, the byte offset.</summary>
public class TransferException : Exception
{
    /// <summary>Creates the exception.</summary>
    public TransferException()
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What failed, where.</param>
    public TransferException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What failed, where.</param>
    /// <param name="innerException">The cause.</param>
    public TransferException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The disk, when the failure belongs to one.</summary>
    public string? Disk { get; init; }

    /// <summary>The byte offset in the disk, when known.</summary>
    public long? Offset { get; init; }
}

/// <summary>Reading the source (NBD export) failed at a range: never zero-filled (FAULTS.md F26).</summary>
public sealed class SourceReadException : TransferException
{
    /// <summary>Creates the exception.</summary>
    public SourceReadException()
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What failed, where.</param>
    public SourceReadException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What failed, where.</param>
    /// <param name="innerException">The cause.</param>
    public SourceReadException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>Writing the restore target failed at a range.</summary>
public sealed class TargetWriteException : TransferException
{
    /// <summary>Creates the exception.</summary>
    public TargetWriteException()
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What failed, where.</param>
    public TargetWriteException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What failed, where.</param>
    /// <param name="innerException">The cause.</param>
    public TargetWriteException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>The request cannot be carried out as asked (no such point, disk or domain; a running domain as a restore
/// target; an incremental asked for where none is possible and fallback is off).</summary>
public sealed class TransferRequestException : TransferException
{
    /// <summary>Creates the exception.</summary>
    public TransferRequestException()
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What is wrong with the request.</param>
    public TransferRequestException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What is wrong with the request.</param>
    /// <param name="innerException">The cause.</param>
    public TransferRequestException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// A job stopped because its cancellation token fired. It is an <see cref="OperationCanceledException"/> on that token;
/// the message says what the job left behind: that nothing was committed and what was released, or which release
/// failed (the next run of the domain's backup releases leftovers, FAULTS.md F03).
/// </summary>
public sealed class JobCancelledException : OperationCanceledException
{
    /// <summary>Creates the exception.</summary>
    public JobCancelledException()
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What was committed, released or left behind.</param>
    public JobCancelledException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What was committed, released or left behind.</param>
    /// <param name="innerException">The cancellation as the job saw it.</param>
    public JobCancelledException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">What was committed, released or left behind.</param>
    /// <param name="innerException">The cancellation as the job saw it.</param>
    /// <param name="token">The token that fired.</param>
    public JobCancelledException(string message, Exception? innerException, CancellationToken token)
        : base(message, innerException, token)
    {
    }
}
