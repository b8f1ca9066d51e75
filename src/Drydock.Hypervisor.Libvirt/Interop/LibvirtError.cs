namespace Drydock.Hypervisor.Libvirt.Interop;

/// <summary>libvirt error codes (<c>virErrorNumber</c>) the driver maps to typed errors.</summary>
internal static class LibvirtErrorCodes
{
    public const int InternalError = 1;
    public const int NoSupport = 3;
    public const int NoConnect = 5;
    public const int InvalidArg = 8;
    public const int OperationFailed = 9;
    public const int XmlError = 27;
    public const int SystemError = 38;
    public const int Rpc = 39;
    public const int NoDomain = 42;
    public const int OperationInvalid = 55;
    public const int ConfigUnsupported = 67;
    public const int OperationTimeout = 68;
    public const int OperationAborted = 78;
    public const int OperationUnsupported = 84;
    public const int NoDomainCheckpoint = 103;
    public const int NoDomainBackup = 104;
    public const int CheckpointInconsistent = 109;

    /// <summary>The <c>VIR_ERR_*</c> name of a code, for <see cref="HypervisorException.HypervisorCode"/>.</summary>
    public static string Name(int code) => code switch
    {
        InternalError => "VIR_ERR_INTERNAL_ERROR",
        NoSupport => "VIR_ERR_NO_SUPPORT",
        NoConnect => "VIR_ERR_NO_CONNECT",
        InvalidArg => "VIR_ERR_INVALID_ARG",
        OperationFailed => "VIR_ERR_OPERATION_FAILED",
        XmlError => "VIR_ERR_XML_ERROR",
        SystemError => "VIR_ERR_SYSTEM_ERROR",
        Rpc => "VIR_ERR_RPC",
        NoDomain => "VIR_ERR_NO_DOMAIN",
        OperationInvalid => "VIR_ERR_OPERATION_INVALID",
        ConfigUnsupported => "VIR_ERR_CONFIG_UNSUPPORTED",
        OperationTimeout => "VIR_ERR_OPERATION_TIMEOUT",
        OperationAborted => "VIR_ERR_OPERATION_ABORTED",
        OperationUnsupported => "VIR_ERR_OPERATION_UNSUPPORTED",
        NoDomainCheckpoint => "VIR_ERR_NO_DOMAIN_CHECKPOINT",
        NoDomainBackup => "VIR_ERR_NO_DOMAIN_BACKUP",
        CheckpointInconsistent => "VIR_ERR_CHECKPOINT_INCONSISTENT",
        _ => "VIR_ERR_" + code.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}

/// <summary>One libvirt error as read from <c>virGetLastError</c> on the failing thread.</summary>
/// <param name="Code">The <c>virErrorNumber</c>.</param>
/// <param name="Domain">The <c>virErrorDomain</c> (which part of libvirt raised it).</param>
/// <param name="Message">libvirt's message.</param>
internal sealed record LibvirtErrorInfo(int Code, int Domain, string Message)
{
    /// <summary>The <c>VIR_ERR_*</c> name.</summary>
    public string CodeName => LibvirtErrorCodes.Name(Code);

    /// <summary>
    /// Reads and clears the calling thread's last libvirt error (libvirt errors are thread-local: call this on the
    /// thread that made the failing call, right after it).
    /// </summary>
    public static unsafe LibvirtErrorInfo TakeLast(string function)
    {
        var error = NativeMethods.virGetLastError();
        if (error is null)
        {
            return new LibvirtErrorInfo(0, 0, $"{function} failed without a libvirt error.");
        }

        var info = new LibvirtErrorInfo(error->Code, error->Domain, NativeStrings.Borrowed(error->Message) ?? $"{function} failed.");
        NativeMethods.virResetLastError();
        return info;
    }
}

/// <summary>
/// A failed libvirt call, thrown by <see cref="LibvirtConnection"/> and turned into the model's typed errors by
/// <see cref="LibvirtErrorMapper"/> where the driver knows what and where.
/// </summary>
#pragma warning disable CA1064 // internal on purpose: the driver maps it to the public HypervisorException types
internal sealed class LibvirtNativeException : Exception
#pragma warning restore CA1064
{
    public LibvirtNativeException(string function, LibvirtErrorInfo error)
        : base($"{function}: {error.Message} ({error.CodeName})")
    {
        Function = function;
        Error = error;
    }

    /// <summary>The libvirt function that failed.</summary>
    public string Function { get; }

    /// <summary>libvirt's error.</summary>
    public LibvirtErrorInfo Error { get; }
}
