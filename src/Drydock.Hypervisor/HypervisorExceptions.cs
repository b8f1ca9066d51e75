namespace Drydock.Hypervisor;

/// <summary>
/// Base type of every error a hypervisor driver raises. <see cref="Exception.Message"/> names what failed and where;
/// <see cref="HypervisorMessage"/> keeps the hypervisor's own words.
/// </summary>
public class HypervisorException : Exception
{
    /// <summary>Creates the error.</summary>
    /// <param name="message">What failed, on which domain/disk/checkpoint.</param>
    /// <param name="domainId">The domain, if any.</param>
    /// <param name="hypervisorMessage">The hypervisor's own message, if it gave one.</param>
    /// <param name="hypervisorCode">The hypervisor's error code or class (libvirt <c>VIR_ERR_*</c>, QMP class), if any.</param>
    /// <param name="innerException">The cause.</param>
    public HypervisorException(string message, string? domainId = null, string? hypervisorMessage = null, string? hypervisorCode = null, Exception? innerException = null)
        : base(hypervisorMessage is null || message.Contains(hypervisorMessage, StringComparison.Ordinal) ? message : $"{message} Hypervisor said: {hypervisorMessage}", innerException)
    {
        DomainId = domainId;
        HypervisorMessage = hypervisorMessage;
        HypervisorCode = hypervisorCode;
    }

    /// <summary>The domain concerned, if any.</summary>
    public string? DomainId { get; }

    /// <summary>The hypervisor's own message, if it gave one.</summary>
    public string? HypervisorMessage { get; }

    /// <summary>The hypervisor's error code or class, if any.</summary>
    public string? HypervisorCode { get; }
}

/// <summary>The connection to the hypervisor failed or was lost.</summary>
public sealed class HypervisorConnectionException : HypervisorException
{
    /// <summary>Creates the error.</summary>
    /// <param name="message">What could not be reached.</param>
    /// <param name="domainId">The domain whose monitor failed, if the connection is per domain.</param>
    /// <param name="innerException">The cause.</param>
    public HypervisorConnectionException(string message, string? domainId = null, Exception? innerException = null)
        : base(message, domainId, innerException: innerException)
    {
    }
}

/// <summary>No domain with that identifier on this host.</summary>
public sealed class DomainNotFoundException : HypervisorException
{
    /// <summary>Creates the error.</summary>
    /// <param name="domainId">The identifier asked for.</param>
    /// <param name="hostName">The host searched.</param>
    /// <param name="hypervisorMessage">The hypervisor's message, if any.</param>
    public DomainNotFoundException(string domainId, string hostName, string? hypervisorMessage = null)
        : base($"Domain '{domainId}' was not found on host '{hostName}'.", domainId, hypervisorMessage)
    {
        HostName = hostName;
    }

    /// <summary>The host searched.</summary>
    public string HostName { get; }
}

/// <summary>The domain's state does not allow the operation (e.g. a restore export of a running domain).</summary>
public sealed class DomainStateException : HypervisorException
{
    /// <summary>Creates the error.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="state">Its state.</param>
    /// <param name="operation">What was refused, e.g. "open a restore export".</param>
    /// <param name="hypervisorMessage">The hypervisor's message, if any.</param>
    public DomainStateException(string domainId, DomainState state, string operation, string? hypervisorMessage = null)
        : base($"Cannot {operation} on domain '{domainId}': it is {Describe(state)}.", domainId, hypervisorMessage)
    {
        State = state;
        Operation = operation;
    }

    /// <summary>The domain's state.</summary>
    public DomainState State { get; }

    /// <summary>What was refused.</summary>
    public string Operation { get; }

    /// <summary>A state as words for messages ("shut off", not "ShutOff").</summary>
    /// <param name="state">The state.</param>
    /// <returns>The words.</returns>
    public static string Describe(DomainState state) => state switch
    {
        DomainState.Running => "running",
        DomainState.Paused => "paused",
        DomainState.ShutOff => "shut off",
        DomainState.Crashed => "crashed",
        _ => "in an unknown state",
    };
}

/// <summary>The domain already has a capture (or another backup job) running: retry later (FAULTS.md F16).</summary>
public sealed class DomainBusyException : HypervisorException
{
    /// <summary>Creates the error.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="captureId">The capture that holds it, when it is Drydock's.</param>
    /// <param name="hypervisorMessage">The hypervisor's message, if any.</param>
    public DomainBusyException(string domainId, string? captureId, string? hypervisorMessage = null)
        : base(captureId is null
            ? $"Domain '{domainId}' is busy: another backup job is running on it."
            : $"Domain '{domainId}' is busy: capture '{captureId}' is running on it.", domainId, hypervisorMessage)
    {
        CaptureId = captureId;
    }

    /// <summary>The capture that holds the domain, when known.</summary>
    public string? CaptureId { get; }
}

/// <summary>The domain has no disk with that target name.</summary>
public sealed class DiskNotFoundException : HypervisorException
{
    /// <summary>Creates the error.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="target">The target asked for.</param>
    /// <param name="message">The message; by default "Domain X has no disk Y."</param>
    public DiskNotFoundException(string domainId, string target, string? message = null)
        : base(message ?? $"Domain '{domainId}' has no disk '{target}'.", domainId)
    {
        Target = target;
    }

    /// <summary>The target asked for.</summary>
    public string Target { get; }
}

/// <summary>Base type of checkpoint errors.</summary>
public abstract class CheckpointException : HypervisorException
{
    /// <summary>Creates the error.</summary>
    /// <param name="message">What failed.</param>
    /// <param name="domainId">The domain.</param>
    /// <param name="checkpoint">The checkpoint.</param>
    /// <param name="target">The disk, if one is concerned.</param>
    /// <param name="hypervisorMessage">The hypervisor's message, if any.</param>
    /// <param name="hypervisorCode">The hypervisor's code, if any.</param>
    protected CheckpointException(string message, string domainId, string checkpoint, string? target, string? hypervisorMessage, string? hypervisorCode)
        : base(message, domainId, hypervisorMessage, hypervisorCode)
    {
        Checkpoint = checkpoint;
        Target = target;
    }

    /// <summary>The checkpoint.</summary>
    public string Checkpoint { get; }

    /// <summary>The disk concerned, if one is.</summary>
    public string? Target { get; }
}

/// <summary>No checkpoint (or, for a disk, no bitmap) by that name.</summary>
public sealed class CheckpointNotFoundException : CheckpointException
{
    /// <summary>Creates the error.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="checkpoint">The checkpoint.</param>
    /// <param name="target">The disk lacking it, if the checkpoint exists elsewhere.</param>
    /// <param name="hypervisorMessage">The hypervisor's message, if any.</param>
    /// <param name="hypervisorCode">The hypervisor's code, if any.</param>
    public CheckpointNotFoundException(string domainId, string checkpoint, string? target = null, string? hypervisorMessage = null, string? hypervisorCode = null)
        : base(target is null
            ? $"Checkpoint '{checkpoint}' does not exist on domain '{domainId}'."
            : $"Checkpoint '{checkpoint}' has no bitmap on disk '{target}' of domain '{domainId}'.", domainId, checkpoint, target, hypervisorMessage, hypervisorCode)
    {
    }
}

/// <summary>A checkpoint's bitmap is inconsistent, in use or otherwise unusable, or a redefine failed validation (F01, F05).</summary>
public sealed class CheckpointInconsistentException : CheckpointException
{
    /// <summary>Creates the error.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="checkpoint">The checkpoint.</param>
    /// <param name="target">The disk whose bitmap is unusable, if known.</param>
    /// <param name="detail">What is wrong.</param>
    /// <param name="hypervisorMessage">The hypervisor's message, if any.</param>
    /// <param name="hypervisorCode">The hypervisor's code, if any.</param>
    public CheckpointInconsistentException(string domainId, string checkpoint, string? target, string detail, string? hypervisorMessage = null, string? hypervisorCode = null)
        : base(target is null
            ? $"Checkpoint '{checkpoint}' of domain '{domainId}' is unusable: {detail}"
            : $"Checkpoint '{checkpoint}' on disk '{target}' of domain '{domainId}' is unusable: {detail}", domainId, checkpoint, target, hypervisorMessage, hypervisorCode)
    {
    }
}

/// <summary>A checkpoint (or a bitmap) by that name already exists (F02).</summary>
public sealed class CheckpointExistsException : CheckpointException
{
    /// <summary>Creates the error.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="checkpoint">The checkpoint.</param>
    /// <param name="target">The disk where the bitmap exists, if known.</param>
    /// <param name="hypervisorMessage">The hypervisor's message, if any.</param>
    /// <param name="hypervisorCode">The hypervisor's code, if any.</param>
    public CheckpointExistsException(string domainId, string checkpoint, string? target = null, string? hypervisorMessage = null, string? hypervisorCode = null)
        : base(target is null
            ? $"Checkpoint '{checkpoint}' already exists on domain '{domainId}'."
            : $"Checkpoint '{checkpoint}' already has a bitmap on disk '{target}' of domain '{domainId}'.", domainId, checkpoint, target, hypervisorMessage, hypervisorCode)
    {
    }
}

/// <summary>The checkpoint is not Drydock's: it is never changed (F15).</summary>
public sealed class ForeignCheckpointException : CheckpointException
{
    /// <summary>Creates the error.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="checkpoint">The foreign checkpoint.</param>
    public ForeignCheckpointException(string domainId, string checkpoint)
        : base($"Checkpoint '{checkpoint}' of domain '{domainId}' is not Drydock's (no '{DrydockNames.Prefix}' prefix): it is left alone.", domainId, checkpoint, null, null, null)
    {
    }
}

/// <summary>The driver or the host's hypervisor lacks a feature.</summary>
public sealed class HypervisorNotSupportedException : HypervisorException
{
    /// <summary>Creates the error.</summary>
    /// <param name="feature">What is missing, e.g. "checkpoints on raw disks".</param>
    /// <param name="driver">The driver's name.</param>
    /// <param name="domainId">The domain, if one is concerned.</param>
    /// <param name="hypervisorMessage">The hypervisor's message, if any.</param>
    public HypervisorNotSupportedException(string feature, string driver, string? domainId = null, string? hypervisorMessage = null)
        : base($"The {driver} driver does not support {feature}{(domainId is null ? "." : $" (domain '{domainId}').")}", domainId, hypervisorMessage)
    {
        Feature = feature;
        Driver = driver;
    }

    /// <summary>What is missing.</summary>
    public string Feature { get; }

    /// <summary>The driver's name.</summary>
    public string Driver { get; }
}

/// <summary>The hypervisor could not set up (or keep) a capture; what was created has been released.</summary>
public sealed class CaptureFailedException : HypervisorException
{
    /// <summary>Creates the error.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="message">What failed, e.g. "adding the snapshot filter above disk 'vda'".</param>
    /// <param name="target">The disk concerned, if one is.</param>
    /// <param name="hypervisorMessage">The hypervisor's message, if any.</param>
    /// <param name="hypervisorCode">The hypervisor's code, if any.</param>
    /// <param name="innerException">The cause.</param>
    public CaptureFailedException(string domainId, string message, string? target = null, string? hypervisorMessage = null, string? hypervisorCode = null, Exception? innerException = null)
        : base(message, domainId, hypervisorMessage, hypervisorCode, innerException)
    {
        Target = target;
    }

    /// <summary>The disk concerned, if one is.</summary>
    public string? Target { get; }
}
