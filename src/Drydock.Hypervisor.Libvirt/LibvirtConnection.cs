using System.Runtime.InteropServices;
using Drydock.Hypervisor.Libvirt.Interop;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>A libvirt job's statistics (<c>virDomainGetJobStats</c>).</summary>
/// <param name="Type">The <c>virDomainJobType</c>: 0 none, 1 bounded, 2 unbounded, 3 completed, 4 failed, 5 cancelled.</param>
/// <param name="Parameters">The typed parameters, by field name (numbers as long/ulong/double, strings, booleans).</param>
internal sealed record LibvirtJobStats(int Type, IReadOnlyDictionary<string, object> Parameters)
{
    public const int None = 0;
    public const int Completed = 3;
    public const int Failed = 4;
    public const int Cancelled = 5;

    /// <summary>The <c>operation</c> field (<c>virDomainJobOperation</c>; 9 is backup), or null.</summary>
    public long? Operation => Parameters.TryGetValue("operation", out var value) && value is long operation ? operation : null;

    /// <summary>The <c>errmsg</c> field, or null.</summary>
    public string? ErrorMessage => Parameters.TryGetValue("errmsg", out var value) ? value as string : null;
}

/// <summary>
/// One <c>virConnectPtr</c> and synchronous wrappers of the libvirt calls the driver makes. Each method calls libvirt
/// and, when it fails, reads libvirt's thread-local error on the same thread and throws
/// <see cref="LibvirtNativeException"/>. Calls block: the driver runs them on <see cref="LibvirtWorker"/> threads,
/// never on the thread pool.
/// </summary>
internal sealed unsafe class LibvirtConnection : IDisposable
{
    private readonly ConnectSafeHandle _handle;

    private LibvirtConnection(ConnectSafeHandle handle, string uri)
    {
        _handle = handle;
        Uri = uri;
    }

    /// <summary>The URI it was opened with.</summary>
    public string Uri { get; }

    /// <summary>The raw handle, for event registration.</summary>
    public ConnectSafeHandle Handle => _handle;

    /// <summary>Opens a connection (<c>virConnectOpen</c>). Start the event loop first for events to be delivered.</summary>
    public static LibvirtConnection Open(string uri)
    {
        var handle = new ConnectSafeHandle(NativeMethods.virConnectOpen(uri));
        if (handle.IsInvalid)
        {
            throw Failure(nameof(NativeMethods.virConnectOpen));
        }

        return new LibvirtConnection(handle, uri);
    }

    /// <summary>Enables keep-alive probes so that a dead libvirtd is noticed (needs the event loop).</summary>
    public void SetKeepAlive(int intervalSeconds, uint count) =>
        Check(NativeMethods.virConnectSetKeepAlive(Raw, intervalSeconds, count), nameof(NativeMethods.virConnectSetKeepAlive));

    /// <summary>
    /// Whether the connection is still open. libvirt closes it when the daemon goes away (end of file on its socket, or
    /// unanswered keep-alive probes); every call on a closed connection fails, and only a new connection helps.
    /// </summary>
    public bool IsAlive() => !_handle.IsClosed && NativeMethods.virConnectIsAlive(Raw) == 1;

    /// <summary>The host's name as libvirt reports it.</summary>
    public string GetHostName() =>
        NativeStrings.TakeOwned(NativeMethods.virConnectGetHostname(Raw)) ?? throw Failure(nameof(NativeMethods.virConnectGetHostname));

    /// <summary>The libvirt library version on the daemon side (major * 1,000,000 + minor * 1,000 + micro).</summary>
    public ulong GetLibVersion()
    {
        Check(NativeMethods.virConnectGetLibVersion(Raw, out var version), nameof(NativeMethods.virConnectGetLibVersion));
        return version;
    }

    /// <summary>Every domain, active and inactive.</summary>
    public IReadOnlyList<DomainSafeHandle> ListAllDomains()
    {
        var count = NativeMethods.virConnectListAllDomains(Raw, out var domains, 0);
        if (count < 0)
        {
            throw Failure(nameof(NativeMethods.virConnectListAllDomains));
        }

        try
        {
            var result = new DomainSafeHandle[count];
            for (var i = 0; i < count; i++)
            {
                result[i] = new DomainSafeHandle(domains[i]);
            }

            return result;
        }
        finally
        {
            NativeMemory.Free(domains);
        }
    }

    /// <summary>Looks a domain up by UUID, then by name; null when neither exists.</summary>
    public DomainSafeHandle? LookupDomain(string idOrName)
    {
        if (Guid.TryParse(idOrName, out _))
        {
            var byUuid = new DomainSafeHandle(NativeMethods.virDomainLookupByUUIDString(Raw, idOrName));
            if (!byUuid.IsInvalid)
            {
                return byUuid;
            }

            byUuid.Dispose();
            var error = LibvirtErrorInfo.TakeLast(nameof(NativeMethods.virDomainLookupByUUIDString));
            if (error.Code != LibvirtErrorCodes.NoDomain)
            {
                throw new LibvirtNativeException(nameof(NativeMethods.virDomainLookupByUUIDString), error);
            }
        }

        var byName = new DomainSafeHandle(NativeMethods.virDomainLookupByName(Raw, idOrName));
        if (!byName.IsInvalid)
        {
            return byName;
        }

        byName.Dispose();
        var nameError = LibvirtErrorInfo.TakeLast(nameof(NativeMethods.virDomainLookupByName));
        return nameError.Code == LibvirtErrorCodes.NoDomain
            ? null
            : throw new LibvirtNativeException(nameof(NativeMethods.virDomainLookupByName), nameError);
    }

    /// <summary>The domain's UUID.</summary>
    public static string GetUuid(DomainSafeHandle domain)
    {
        var buffer = stackalloc byte[NativeMethods.UuidStringBufferLength];
        Check(NativeMethods.virDomainGetUUIDString(domain.DangerousGetHandle(), buffer), nameof(NativeMethods.virDomainGetUUIDString));
        return Marshal.PtrToStringUTF8((nint)buffer) ?? string.Empty;
    }

    /// <summary>The domain's UUID from a raw pointer libvirt handed to a callback (valid for the callback's duration).</summary>
    public static string? GetUuid(nint domain)
    {
        var buffer = stackalloc byte[NativeMethods.UuidStringBufferLength];
        return NativeMethods.virDomainGetUUIDString(domain, buffer) == 0 ? Marshal.PtrToStringUTF8((nint)buffer) : null;
    }

    /// <summary>The domain's name.</summary>
    public static string GetName(DomainSafeHandle domain) =>
        NativeStrings.Borrowed(NativeMethods.virDomainGetName(domain.DangerousGetHandle())) ?? throw Failure(nameof(NativeMethods.virDomainGetName));

    /// <summary>The domain's state and reason (<c>virDomainState</c>, reason enum of that state).</summary>
    public static (int State, int Reason) GetState(DomainSafeHandle domain)
    {
        Check(NativeMethods.virDomainGetState(domain.DangerousGetHandle(), out var state, out var reason, 0), nameof(NativeMethods.virDomainGetState));
        return (state, reason);
    }

    /// <summary>Whether the domain is persistent.</summary>
    public static bool IsPersistent(DomainSafeHandle domain)
    {
        var result = NativeMethods.virDomainIsPersistent(domain.DangerousGetHandle());
        return result < 0 ? throw Failure(nameof(NativeMethods.virDomainIsPersistent)) : result == 1;
    }

    /// <summary>The domain XML (live for a running domain unless <paramref name="flags"/> asks for the inactive one).</summary>
    public static string GetXmlDesc(DomainSafeHandle domain, uint flags = 0) =>
        NativeStrings.TakeOwned(NativeMethods.virDomainGetXMLDesc(domain.DangerousGetHandle(), flags)) ?? throw Failure(nameof(NativeMethods.virDomainGetXMLDesc));

    /// <summary>Capacity, allocation and physical size of a disk.</summary>
    public static NativeMethods.BlockInfo GetBlockInfo(DomainSafeHandle domain, string target)
    {
        Check(NativeMethods.virDomainGetBlockInfo(domain.DangerousGetHandle(), target, out var info, 0), nameof(NativeMethods.virDomainGetBlockInfo));
        return info;
    }

    /// <summary>Starts a defined domain.</summary>
    public static void Start(DomainSafeHandle domain, bool paused) =>
        Check(NativeMethods.virDomainCreateWithFlags(domain.DangerousGetHandle(), paused ? NativeMethods.DomainStartPaused : 0), nameof(NativeMethods.virDomainCreateWithFlags));

    /// <summary>Resumes a paused domain.</summary>
    public static void Resume(DomainSafeHandle domain) =>
        Check(NativeMethods.virDomainResume(domain.DangerousGetHandle()), nameof(NativeMethods.virDomainResume));

    /// <summary>Powers a domain off.</summary>
    public static void Destroy(DomainSafeHandle domain) =>
        Check(NativeMethods.virDomainDestroy(domain.DangerousGetHandle()), nameof(NativeMethods.virDomainDestroy));

    /// <summary>Starts a backup job (<c>virDomainBackupBegin</c>), optionally creating a checkpoint atomically with it.</summary>
    public static void BackupBegin(DomainSafeHandle domain, string backupXml, string? checkpointXml) =>
        Check(NativeMethods.virDomainBackupBegin(domain.DangerousGetHandle(), backupXml, checkpointXml, 0), nameof(NativeMethods.virDomainBackupBegin));

    /// <summary>The running backup job's XML, or null when the domain has no backup job.</summary>
    public static string? BackupGetXmlDesc(DomainSafeHandle domain)
    {
        var xml = NativeMethods.virDomainBackupGetXMLDesc(domain.DangerousGetHandle(), 0);
        if (xml is not null)
        {
            return NativeStrings.TakeOwned(xml);
        }

        var error = LibvirtErrorInfo.TakeLast(nameof(NativeMethods.virDomainBackupGetXMLDesc));
        // No job: VIR_ERR_NO_DOMAIN_BACKUP; a shut-off domain: VIR_ERR_OPERATION_INVALID "domain is not running".
        return error.Code is LibvirtErrorCodes.NoDomainBackup or LibvirtErrorCodes.OperationInvalid
            ? null
            : throw new LibvirtNativeException(nameof(NativeMethods.virDomainBackupGetXMLDesc), error);
    }

    /// <summary>Aborts the domain's job (<c>virDomainAbortJobFlags</c>): the normal end of a pull backup.</summary>
    public static void AbortJob(DomainSafeHandle domain) =>
        Check(NativeMethods.virDomainAbortJobFlags(domain.DangerousGetHandle(), 0), nameof(NativeMethods.virDomainAbortJobFlags));

    /// <summary>The current (or, with <see cref="NativeMethods.JobStatsCompleted"/>, the last completed) job's statistics.</summary>
    public static LibvirtJobStats GetJobStats(DomainSafeHandle domain, uint flags)
    {
        Check(NativeMethods.virDomainGetJobStats(domain.DangerousGetHandle(), out var type, out var parameters, out var count, flags), nameof(NativeMethods.virDomainGetJobStats));
        try
        {
            return new LibvirtJobStats(type, ReadTypedParameters(parameters, count));
        }
        finally
        {
            NativeMethods.virTypedParamsFree(parameters, count);
        }
    }

    /// <summary>Reads libvirt typed parameters into a dictionary.</summary>
    public static Dictionary<string, object> ReadTypedParameters(NativeMethods.TypedParameter* parameters, int count)
    {
        var result = new Dictionary<string, object>(StringComparer.Ordinal);
        for (var i = 0; i < count; i++)
        {
            var p = &parameters[i];
            var name = Marshal.PtrToStringUTF8((nint)p->Field) ?? string.Empty;
            object? value = p->Type switch
            {
                NativeMethods.TypedParamInt => (long)(int)p->Value,
                NativeMethods.TypedParamUInt => (long)(uint)p->Value,
                NativeMethods.TypedParamLLong => p->Value,
                NativeMethods.TypedParamULLong => (ulong)p->Value,
                NativeMethods.TypedParamDouble => BitConverter.Int64BitsToDouble(p->Value),
                NativeMethods.TypedParamBoolean => (byte)p->Value != 0,
                NativeMethods.TypedParamString => Marshal.PtrToStringUTF8((nint)p->Value),
                _ => null,
            };
            if (value is not null)
            {
                result[name] = value;
            }
        }

        return result;
    }

    /// <summary>Creates (or, with the redefine flags, redefines) a checkpoint.</summary>
    public static void CreateCheckpoint(DomainSafeHandle domain, string xml, uint flags)
    {
        using var checkpoint = new CheckpointSafeHandle(NativeMethods.virDomainCheckpointCreateXML(domain.DangerousGetHandle(), xml, flags));
        if (checkpoint.IsInvalid)
        {
            throw Failure(nameof(NativeMethods.virDomainCheckpointCreateXML));
        }
    }

    /// <summary>Looks a checkpoint up; null when it does not exist.</summary>
    public static CheckpointSafeHandle? LookupCheckpoint(DomainSafeHandle domain, string name)
    {
        var checkpoint = new CheckpointSafeHandle(NativeMethods.virDomainCheckpointLookupByName(domain.DangerousGetHandle(), name, 0));
        if (!checkpoint.IsInvalid)
        {
            return checkpoint;
        }

        checkpoint.Dispose();
        var error = LibvirtErrorInfo.TakeLast(nameof(NativeMethods.virDomainCheckpointLookupByName));
        return error.Code == LibvirtErrorCodes.NoDomainCheckpoint
            ? null
            : throw new LibvirtNativeException(nameof(NativeMethods.virDomainCheckpointLookupByName), error);
    }

    /// <summary>Every checkpoint of the domain, parents before children, as (name, XML without the domain).</summary>
    public static IReadOnlyList<(string Name, string Xml)> ListCheckpoints(DomainSafeHandle domain)
    {
        var count = NativeMethods.virDomainListAllCheckpoints(domain.DangerousGetHandle(), out var checkpoints, NativeMethods.CheckpointListTopological);
        if (count < 0)
        {
            throw Failure(nameof(NativeMethods.virDomainListAllCheckpoints));
        }

        var handles = new CheckpointSafeHandle[count];
        try
        {
            for (var i = 0; i < count; i++)
            {
                handles[i] = new CheckpointSafeHandle(checkpoints[i]);
            }
        }
        finally
        {
            NativeMemory.Free(checkpoints);
        }

        var result = new List<(string, string)>(count);
        foreach (var handle in handles)
        {
            using (handle)
            {
                var name = NativeStrings.Borrowed(NativeMethods.virDomainCheckpointGetName(handle.DangerousGetHandle())) ?? string.Empty;
                result.Add((name, GetCheckpointXml(handle, NativeMethods.CheckpointXmlNoDomain)));
            }
        }

        return result;
    }

    /// <summary>A checkpoint's XML.</summary>
    public static string GetCheckpointXml(CheckpointSafeHandle checkpoint, uint flags) =>
        NativeStrings.TakeOwned(NativeMethods.virDomainCheckpointGetXMLDesc(checkpoint.DangerousGetHandle(), flags))
        ?? throw Failure(nameof(NativeMethods.virDomainCheckpointGetXMLDesc));

    /// <summary>Deletes a checkpoint (bitmaps and metadata, or metadata only).</summary>
    public static void DeleteCheckpoint(CheckpointSafeHandle checkpoint, uint flags) =>
        Check(NativeMethods.virDomainCheckpointDelete(checkpoint.DangerousGetHandle(), flags), nameof(NativeMethods.virDomainCheckpointDelete));

    /// <summary>Runs a QMP (or, with the HMP flag, HMP) command through libvirt and returns QEMU's reply text.</summary>
    public static string QemuMonitorCommand(DomainSafeHandle domain, string command, uint flags = QemuNativeMethods.MonitorCommandDefault)
    {
        Check(QemuNativeMethods.virDomainQemuMonitorCommand(domain.DangerousGetHandle(), command, out var result, flags), nameof(QemuNativeMethods.virDomainQemuMonitorCommand));
        return NativeStrings.TakeOwned(result) ?? string.Empty;
    }

    /// <inheritdoc/>
    public void Dispose() => _handle.Dispose();

    private nint Raw => _handle.DangerousGetHandle();

    private static void Check(int result, string function)
    {
        if (result < 0)
        {
            throw Failure(function);
        }
    }

    private static LibvirtNativeException Failure(string function) => new(function, LibvirtErrorInfo.TakeLast(function));
}
