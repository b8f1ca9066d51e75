using Drydock.Hypervisor.Libvirt.Interop;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>What the driver was doing when libvirt failed, for <see cref="LibvirtErrorMapper.Map"/>.</summary>
internal enum LibvirtOperationKind
{
    /// <summary>Anything else: errors map by code only.</summary>
    General = 0,

    /// <summary>Setting up a capture: unknown failures become <see cref="CaptureFailedException"/>.</summary>
    Capture = 1,

    /// <summary>A checkpoint operation: "exists", "not found", "inconsistent" name the checkpoint.</summary>
    Checkpoint = 2,

    /// <summary>Opening the connection: failures become <see cref="HypervisorConnectionException"/>.</summary>
    Connect = 3,
}

/// <summary>
/// Turns libvirt's errors into the model's typed errors, keeping libvirt's own message and <c>VIR_ERR_*</c> code.
/// Pure: the unit tests feed it recorded libvirt 9.0 messages.
/// </summary>
internal static class LibvirtErrorMapper
{
    /// <summary>Maps one failed call.</summary>
    /// <param name="error">libvirt's error.</param>
    /// <param name="kind">What the driver was doing.</param>
    /// <param name="operation">The operation in words, e.g. "begin a capture".</param>
    /// <param name="hostName">The host.</param>
    /// <param name="domainId">The domain, if one is concerned.</param>
    /// <param name="checkpoint">The checkpoint, if one is concerned.</param>
    /// <param name="target">The disk, if one is concerned.</param>
    /// <returns>The typed error to throw.</returns>
    public static HypervisorException Map(
        LibvirtErrorInfo error,
        LibvirtOperationKind kind,
        string operation,
        string hostName,
        string? domainId = null,
        string? checkpoint = null,
        string? target = null)
    {
        var message = error.Message;
        var code = error.CodeName;
        var domain = domainId ?? "?";

        if (kind == LibvirtOperationKind.Connect || error.Code is LibvirtErrorCodes.NoConnect or LibvirtErrorCodes.Rpc)
        {
            return new HypervisorConnectionException($"Could not {operation} on host '{hostName}': {message} ({code}).", domainId);
        }

        if (error.Code == LibvirtErrorCodes.NoDomain)
        {
            return new DomainNotFoundException(domain, hostName, message);
        }

        if (IsBusy(error))
        {
            return new DomainBusyException(domain, captureId: null, message);
        }

        if (checkpoint is not null)
        {
            if (error.Code == LibvirtErrorCodes.NoDomainCheckpoint)
            {
                return new CheckpointNotFoundException(domain, checkpoint, target, message, code);
            }

            if (error.Code == LibvirtErrorCodes.CheckpointInconsistent
                || message.Contains("inconsistent", StringComparison.OrdinalIgnoreCase)
                || message.Contains("missing or broken bitmap", StringComparison.OrdinalIgnoreCase))
            {
                return new CheckpointInconsistentException(domain, checkpoint, target, $"libvirt could not use it to {operation}.", message, code);
            }

            if (message.Contains("already exists", StringComparison.OrdinalIgnoreCase))
            {
                return new CheckpointExistsException(domain, checkpoint, target, message, code);
            }
        }

        if (error.Code == LibvirtErrorCodes.OperationInvalid && message.Contains("not running", StringComparison.OrdinalIgnoreCase))
        {
            return new DomainStateException(domain, DomainState.ShutOff, operation, message);
        }

        if (error.Code is LibvirtErrorCodes.NoSupport or LibvirtErrorCodes.OperationUnsupported)
        {
            return new HypervisorNotSupportedException(operation, LibvirtDriver.DriverName, domainId, message);
        }

        return kind == LibvirtOperationKind.Capture
            ? new CaptureFailedException(domain, $"libvirt could not {operation} on domain '{domain}' (host '{hostName}').", target, message, code)
            : new HypervisorException($"libvirt could not {operation} on domain '{domain}' (host '{hostName}').", domainId, message, code);
    }

    /// <summary>
    /// Whether the error says another job holds the domain: libvirt 9.0 waits 30 s for the domain's job lock and then
    /// fails with "cannot acquire state change lock", or refuses at once with "another job is active" /
    /// "there is already an active backup job".
    /// </summary>
    public static bool IsBusy(LibvirtErrorInfo error) =>
        (error.Code == LibvirtErrorCodes.OperationTimeout && error.Message.Contains("state change lock", StringComparison.OrdinalIgnoreCase))
        || error.Message.Contains("another job", StringComparison.OrdinalIgnoreCase)
        || error.Message.Contains("already an active", StringComparison.OrdinalIgnoreCase)
        || error.Message.Contains("already active", StringComparison.OrdinalIgnoreCase);
}
