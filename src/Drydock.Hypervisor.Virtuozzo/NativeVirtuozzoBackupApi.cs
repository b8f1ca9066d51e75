using System.Runtime.InteropServices;
using System.Text;
using Drydock.Hypervisor.Virtuozzo.Interop;
using Drydock.Hypervisor.Virtuozzo.Xml;
using Drydock.Nbd;

namespace Drydock.Hypervisor.Virtuozzo;

/// <summary>
/// The X API of a Virtuozzo Hybrid Server host's libvirt, through libvirt.so.0. The X entry points are resolved at run
/// time; on a libvirt without them (stock libvirt, e.g. Debian's 9.0) <see cref="ConnectAsync"/> fails with a
/// <see cref="HypervisorNotSupportedException"/> naming what is missing, before any connection is opened. Blocking
/// libvirt calls run on dedicated threads. Not exercised against a Virtuozzo host (none was available): see
/// docs/HYPERVISORS.md.
/// </summary>
public sealed unsafe class NativeVirtuozzoBackupApi : IVirtuozzoBackupApi
{
    private const uint StartPaused = 1;

    private readonly XApi _x;
    private readonly VirtuozzoDriverOptions _options;
    private nint _connection;

    private NativeVirtuozzoBackupApi(XApi x, nint connection, string hostName, VirtuozzoDriverOptions options)
    {
        _x = x;
        _connection = connection;
        HostName = hostName;
        _options = options;
    }

    /// <inheritdoc/>
    public string HostName { get; }

    /// <summary>Whether this machine's libvirt.so.0 has the Virtuozzo X API; <paramref name="missing"/> lists what it lacks.</summary>
    public static bool IsAvailable(out IReadOnlyList<string> missing) => XApi.TryLoad(out missing) is not null;

    /// <summary>Resolves the X API and connects.</summary>
    /// <exception cref="HypervisorNotSupportedException">This libvirt has no Virtuozzo backup API.</exception>
    /// <exception cref="HypervisorConnectionException">libvirt could not be reached.</exception>
    public static Task<NativeVirtuozzoBackupApi> ConnectAsync(VirtuozzoDriverOptions options, CancellationToken cancellationToken = default)
    {
        var x = XApi.TryLoad(out var missing) ?? throw new HypervisorNotSupportedException(
            "the Virtuozzo backup API: this libvirt has no Virtuozzo backup API (it lacks " + string.Join(", ", missing)
            + "); it ships only with the libvirt of Virtuozzo Hybrid Server",
            VirtuozzoDriver.DriverName);
        return Run(() =>
        {
            var connection = NativeMethods.virConnectOpen(options.Uri);
            if (connection == 0)
            {
                var (_, message) = NativeMethods.TakeLastError(nameof(NativeMethods.virConnectOpen));
                throw new HypervisorConnectionException($"Could not connect to {options.Uri}: {message}");
            }

            var host = options.HostName ?? TakeString(NativeMethods.virConnectGetHostname(connection)) ?? options.Uri;
            return new NativeVirtuozzoBackupApi(x, connection, host, options);
        }, cancellationToken);
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<VirtuozzoDomain>> ListDomainsAsync(CancellationToken cancellationToken = default) => Run(() =>
    {
        var count = NativeMethods.virConnectListAllDomains(_connection, out var domains, 0);
        Check(count, "list domains", null);
        var result = new List<VirtuozzoDomain>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                result.Add(Describe(domains[i]));
            }
        }
        finally
        {
            for (var i = 0; i < count; i++)
            {
                _ = NativeMethods.virDomainFree(domains[i]);
            }

            NativeMemory.Free(domains);
        }

        return (IReadOnlyList<VirtuozzoDomain>)result;
    }, cancellationToken);

    /// <inheritdoc/>
    public Task<VirtuozzoDomain> GetDomainAsync(string domainId, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, Describe, cancellationToken);

    /// <inheritdoc/>
    public Task<string> CreateBlockSnapshotAsync(string domainId, string snapshotXml, bool createCheckpoint, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, domain =>
        {
            var snapshot = WithUtf8(snapshotXml, xml => _x.SnapshotCreateXml(domain, xml, createCheckpoint ? _options.CreateCheckpointFlag : 0));
            if (snapshot == 0)
            {
                Fail("create a block snapshot", domainId);
            }

            try
            {
                return BlockSnapshotXml.Parse(TakeString(_x.SnapshotGetXmlDesc(snapshot, 0)) ?? snapshotXml).Name ?? string.Empty;
            }
            finally
            {
                _x.SnapshotFree(snapshot);
            }
        }, cancellationToken);

    /// <inheritdoc/>
    public Task<bool> DeleteBlockSnapshotAsync(string domainId, string snapshot, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, domain =>
        {
            var handle = WithUtf8(snapshot, name => _x.SnapshotLookupByName(domain, name, 0));
            if (handle == 0)
            {
                NativeMethods.virResetLastError();
                return false;
            }

            try
            {
                Check(_x.SnapshotDelete(handle, 0), $"delete block snapshot '{snapshot}'", domainId);
                return true;
            }
            finally
            {
                _x.SnapshotFree(handle);
            }
        }, cancellationToken);

    /// <inheritdoc/>
    public Task<IReadOnlyList<string>> ListBlockSnapshotsAsync(string domainId, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, domain =>
        {
            if (_x.SnapshotListAll is null)
            {
                throw new HypervisorNotSupportedException("listing block snapshots (no XList entry point)", VirtuozzoDriver.DriverName, domainId);
            }

            nint* snapshots;
            var count = _x.SnapshotListAll(domain, &snapshots, 0);
            Check(count, "list block snapshots", domainId);
            var names = new List<string>(count);
            for (var i = 0; i < count; i++)
            {
                names.Add(BlockSnapshotXml.Parse(TakeString(_x.SnapshotGetXmlDesc(snapshots[i], 0)) ?? "<domainblocksnapshot/>").Name ?? string.Empty);
                _x.SnapshotFree(snapshots[i]);
            }

            NativeMemory.Free(snapshots);
            return (IReadOnlyList<string>)names;
        }, cancellationToken);

    /// <inheritdoc/>
    public Task<string> GetBlockSnapshotXmlAsync(string domainId, string snapshot, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, domain =>
        {
            var handle = WithUtf8(snapshot, name => _x.SnapshotLookupByName(domain, name, 0));
            if (handle == 0)
            {
                Fail($"look up block snapshot '{snapshot}'", domainId);
            }

            try
            {
                return TakeString(_x.SnapshotGetXmlDesc(handle, 0)) ?? string.Empty;
            }
            finally
            {
                _x.SnapshotFree(handle);
            }
        }, cancellationToken);

    /// <inheritdoc/>
    public Task<IReadOnlyList<VzExportEndpoint>> StartExportAsync(string domainId, string exportXml, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, domain =>
        {
            Check(WithUtf8(exportXml, xml => _x.ExportStart(domain, xml, 0)), "start a block export", domainId);
            var export = BlockExportXml.Parse(exportXml);
            var live = VzDomainXml.Parse(TakeString(NativeMethods.virDomainGetXMLDesc(domain, 0)) ?? throw Failure("read the domain XML", domainId));
            var port = export.Address.Port ?? _options.ExportPort;
            return (IReadOnlyList<VzExportEndpoint>)[.. export.Disks.Select(d =>
            {
                // The export name as the domain XML reports it (x-blockexport), else the one asked for.
                var reported = live.FindDisk(d.Name)?.Exports.FirstOrDefault(e => e.Snapshot == d.Snapshot)?.ExportName;
                var uri = NbdUri.ForTcp(export.Address.Host, port, string.IsNullOrEmpty(reported) ? d.ExportName ?? d.Name : reported);
                if (export.Address.Tls == true)
                {
                    uri = uri.WithTls(_options.TlsClientCertificatesDirectory);
                }

                return new VzExportEndpoint(d.Name, uri, d.Checkpoint is null ? null : "qemu:dirty-bitmap:" + d.Checkpoint, null);
            })];
        }, cancellationToken);

    /// <inheritdoc/>
    public Task StopExportAsync(string domainId, string exportXml, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, domain =>
        {
            Check(WithUtf8(exportXml, xml => _x.ExportStop(domain, xml, 0)), "stop a block export", domainId);
            return true;
        }, cancellationToken);

    /// <inheritdoc/>
    public Task RemoveCheckpointAsync(string domainId, string checkpoint, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, domain =>
        {
            Check(WithUtf8(checkpoint, name => _x.CheckpointRemove(domain, name, 0)), $"remove checkpoint '{checkpoint}'", domainId);
            return true;
        }, cancellationToken);

    /// <inheritdoc/>
    public Task StartAsync(string domainId, bool paused, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, domain => Check(NativeMethods.virDomainCreateWithFlags(domain, paused ? StartPaused : 0), "start the domain", domainId), cancellationToken);

    /// <inheritdoc/>
    public Task ResumeAsync(string domainId, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, domain => Check(NativeMethods.virDomainResume(domain), "resume the domain", domainId), cancellationToken);

    /// <inheritdoc/>
    public Task DestroyAsync(string domainId, CancellationToken cancellationToken = default) =>
        OnDomain(domainId, domain => Check(NativeMethods.virDomainDestroy(domain), "destroy the domain", domainId), cancellationToken);

    /// <inheritdoc/>
    public ValueTask DisposeAsync()
    {
        var connection = Interlocked.Exchange(ref _connection, 0);
        return connection == 0 ? ValueTask.CompletedTask : new ValueTask(Run(() => NativeMethods.virConnectClose(connection), CancellationToken.None));
    }

    private static Task<T> Run<T>(Func<T> body, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(body, cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    private Task<T> OnDomain<T>(string domainId, Func<nint, T> body, CancellationToken cancellationToken) => Run(() =>
    {
        var domain = Guid.TryParse(domainId, out _) ? NativeMethods.virDomainLookupByUUIDString(_connection, domainId) : 0;
        if (domain == 0)
        {
            NativeMethods.virResetLastError();
            domain = NativeMethods.virDomainLookupByName(_connection, domainId);
        }

        if (domain == 0)
        {
            var (_, message) = NativeMethods.TakeLastError(nameof(NativeMethods.virDomainLookupByName));
            throw new DomainNotFoundException(domainId, HostName, message);
        }

        try
        {
            return body(domain);
        }
        finally
        {
            _ = NativeMethods.virDomainFree(domain);
        }
    }, cancellationToken);

    private VirtuozzoDomain Describe(nint domain)
    {
        var xml = TakeString(NativeMethods.virDomainGetXMLDesc(domain, 0)) ?? throw Failure("read the domain XML", null);
        var parsed = VzDomainXml.Parse(xml);
        Check(NativeMethods.virDomainGetState(domain, out var state, out var reason, 0), "read the domain state", parsed.Uuid);
        var sizes = new Dictionary<string, ulong>(StringComparer.Ordinal);
        foreach (var disk in parsed.Disks)
        {
            if (NativeMethods.virDomainGetBlockInfo(domain, disk.Target, out var info, 0) == 0)
            {
                sizes[disk.Target] = info.Capacity;
            }
            else
            {
                NativeMethods.virResetLastError();
            }
        }

        var mapped = state switch
        {
            1 or 2 or 4 => DomainState.Running,
            3 or 7 => DomainState.Paused,
            5 => reason == 3 ? DomainState.Crashed : DomainState.ShutOff,
            6 => DomainState.Crashed,
            _ => DomainState.Unknown,
        };
        return new VirtuozzoDomain(parsed.Uuid, parsed.Name, mapped, xml, sizes);
    }

    private static T WithUtf8<T>(string text, Func<nint, T> body)
    {
        var bytes = Encoding.UTF8.GetBytes(text + "\0");
        fixed (byte* pointer = bytes)
        {
            return body((nint)pointer);
        }
    }

    private static nint WithUtf8(string text, Func<nint, nint> body) => WithUtf8<nint>(text, body);

    private static string? TakeString(byte* text)
    {
        if (text is null)
        {
            return null;
        }

        try
        {
            return Marshal.PtrToStringUTF8((nint)text);
        }
        finally
        {
            NativeMemory.Free(text);
        }
    }

    private bool Check(int result, string operation, string? domainId) => result >= 0 || Fail(operation, domainId);

    private bool Fail(string operation, string? domainId) => throw Failure(operation, domainId);

    private HypervisorException Failure(string operation, string? domainId)
    {
        var (code, message) = NativeMethods.TakeLastError(operation);
        return new HypervisorException($"Virtuozzo libvirt could not {operation} (domain '{domainId}', host '{HostName}').", domainId, message,
            "VIR_ERR_" + code.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }
}
