using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Nodes;
using Drydock.Hypervisor.Qemu.Qmp;
using Microsoft.Extensions.Logging;

namespace Drydock.Hypervisor.Qemu;

/// <summary>
/// The hypervisor driver over QMP: each domain is a QEMU or qemu-storage-daemon instance (<see cref="QemuDomainOptions"/>).
/// Captures are block snapshots (copy-before-write filter + snapshot-access node, with
/// <c>on-cbw-error=break-snapshot</c>), exported read-only over the instance's NBD server; checkpoints are persistent
/// dirty bitmaps in the qcow2 images, every one of them recording, so any of them can be the base of an incremental
/// or differential capture; restore exports are writable NBD exports of the front nodes.
/// </summary>
public sealed partial class QemuDriver : IHypervisorDriver
{
    /// <summary>The driver's name in capabilities and messages.</summary>
    public const string DriverName = "qemu";

    private readonly QemuDriverOptions _options;
    private readonly QmpClientOptions _qmpOptions;
    private readonly Dictionary<string, QemuDomain> _domains = new(StringComparer.Ordinal);
    private readonly DomainEventBroadcaster _events;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private int _disposed;

    /// <summary>Creates the driver. It connects to each instance when first needed.</summary>
    /// <param name="options">The domains and settings.</param>
    /// <exception cref="ArgumentException">Options are inconsistent (duplicate ids, targets, node names, bad names).</exception>
    public QemuDriver(QemuDriverOptions options)
    {
        _options = options;
        _time = options.TimeProvider;
        _logger = options.LoggerFactory.CreateLogger<QemuDriver>();
        _qmpOptions = new QmpClientOptions
        {
            CommandTimeout = options.CommandTimeout,
            ConnectTimeout = options.ConnectTimeout,
            TimeProvider = options.TimeProvider,
            LoggerFactory = options.LoggerFactory,
        };
        _events = new DomainEventBroadcaster(options.TimeProvider, options.HostName);
        foreach (var domain in options.Domains)
        {
            Validate(domain);
            if (!_domains.TryAdd(domain.Id, new QemuDomain(domain)))
            {
                throw new ArgumentException($"Domain id '{domain.Id}' is configured twice.", nameof(options));
            }
        }
    }

    /// <inheritdoc/>
    public string HostName => _options.HostName;

    /// <inheritdoc/>
    public HypervisorCapabilities Capabilities { get; } = new()
    {
        Driver = DriverName,
        Checkpoints = true,
        CheckpointMetadata = false,
        DifferentialCaptures = true,
        RestoreExports = true,
        Lifecycle = true,
        Events = true,
        DiskGenerations = false,
    };

    /// <inheritdoc/>
    public async Task<IReadOnlyList<DomainInfo>> ListDomainsAsync(CancellationToken cancellationToken = default)
    {
        var list = new List<DomainInfo>(_domains.Count);
        foreach (var domain in _domains.Values)
        {
            list.Add(await DescribeAsync(domain, cancellationToken));
        }

        return list;
    }

    /// <inheritdoc/>
    public Task<DomainInfo> GetDomainAsync(string domainId, CancellationToken cancellationToken = default) =>
        DescribeAsync(Find(domainId), cancellationToken);

    /// <inheritdoc/>
    public Task<DomainDefinition> GetDefinitionAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        var disks = new JsonArray();
        foreach (var disk in domain.Options.Disks)
        {
            disks.Add(new JsonObject
            {
                ["target"] = disk.Target,
                ["node"] = disk.NodeName,
                ["front"] = disk.FrontNodeName,
                ["image"] = disk.ImagePath,
                ["format"] = disk.Format,
            });
        }

        var definition = new JsonObject
        {
            ["id"] = domain.Id,
            ["name"] = domain.Name,
            ["qmp"] = domain.Options.QmpSocketPath,
            ["disks"] = disks,
        };
        return Task.FromResult(new DomainDefinition(DomainDefinition.QemuJson, definition.ToJsonString(new JsonSerializerOptions { WriteIndented = true })));
    }

    /// <inheritdoc/>
    public IAsyncEnumerable<DomainEvent> WatchEventsAsync(CancellationToken cancellationToken = default)
    {
        var events = _events.Subscribe(cancellationToken);
        // Connect to the running instances so that their ends are seen (best effort; a stopped one is not an error).
        _ = Task.Run(async () =>
        {
            foreach (var domain in _domains.Values)
            {
                try
                {
                    await TryConnectAsync(domain, cancellationToken);
                }
                catch (Exception ex) when (ex is OperationCanceledException or HypervisorException)
                {
                    Log.WatchConnectFailed(_logger, domain.Id, ex.Message);
                }
            }
        }, CancellationToken.None);
        return events;
    }

    /// <summary>Disconnects from every instance. Captures and launched instances are left as they are.</summary>
    /// <returns>A task.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (var domain in _domains.Values)
        {
            if (domain.Qmp is { } qmp)
            {
                domain.Qmp = null;
                await qmp.DisposeAsync();
            }
        }

        _events.Complete();
    }

    private static void Validate(QemuDomainOptions domain)
    {
        ValidateName(domain.Id, "domain id");
        var targets = new HashSet<string>(StringComparer.Ordinal);
        var nodes = new HashSet<string>(StringComparer.Ordinal);
        foreach (var disk in domain.Disks)
        {
            ValidateName(disk.Target, "disk target");
            if (!targets.Add(disk.Target))
            {
                throw new ArgumentException($"Domain '{domain.Id}' lists disk '{disk.Target}' twice.");
            }

            foreach (var node in new[] { disk.NodeName, disk.FrontNodeName })
            {
                if (node.Length is 0 or > 31 || node.StartsWith(CaptureNames.Prefix, StringComparison.Ordinal) || !nodes.Add(node))
                {
                    throw new ArgumentException($"Domain '{domain.Id}' disk '{disk.Target}': node name '{node}' is empty, longer than 31 characters, reserved or used twice.");
                }
            }

            if (domain.Launch is not null && (disk.ImagePath is null || disk.NodeName.Length > 26))
            {
                throw new ArgumentException($"Domain '{domain.Id}' disk '{disk.Target}' needs an ImagePath and a node name of at most 26 characters to be launched.");
            }
        }
    }

    private static void ValidateName(string name, string what)
    {
        if (name.Length is 0 or > 128 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
        {
            throw new ArgumentException($"The {what} '{name}' must be 1-128 ASCII letters, digits, '-', '_' or '.'.");
        }
    }

    private QemuDomain Find(string domainId) =>
        _domains.TryGetValue(domainId, out var domain) ? domain : throw new DomainNotFoundException(domainId, HostName);

    private async Task<DomainInfo> DescribeAsync(QemuDomain domain, CancellationToken cancellationToken)
    {
        var qmp = await TryConnectAsync(domain, cancellationToken);
        if (qmp is null)
        {
            return new DomainInfo
            {
                Id = domain.Id,
                Name = domain.Name,
                HostName = HostName,
                State = DomainState.ShutOff,
                Disks = [.. domain.Options.Disks.Select(OfflineDisk)],
            };
        }

        try
        {
            var nodes = await qmp.QueryNamedBlockNodesAsync(cancellationToken);
            var disks = new List<DiskInfo>();
            foreach (var disk in domain.Options.Disks)
            {
                disks.Add(OnlineDisk(domain, disk, nodes));
            }

            var (state, detail) = await StateWithDetailAsync(domain, qmp, cancellationToken);
            return new DomainInfo
            {
                Id = domain.Id,
                Name = domain.Name,
                HostName = HostName,
                State = state,
                StateDetail = detail,
                Disks = disks,
            };
        }
        catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException)
        {
            throw Translate(ex, domain.Id, "describe the domain");
        }
    }

    private async Task<(DomainState State, string? Detail)> StateWithDetailAsync(QemuDomain domain, QmpClient qmp, CancellationToken cancellationToken)
    {
        try
        {
            // A QEMU virtual machine reports its run state.
            var status = QmpCommands.StringOf(await qmp.ExecuteAsync("query-status", cancellationToken: cancellationToken), "status");
            var state = status switch
            {
                "running" => DomainState.Running,
                "paused" or "prelaunch" or "inmigrate" or "postmigrate" or "suspended" or "save-vm" or "restore-vm" or "debug" or "finish-migrate" or "colo" => DomainState.Paused,
                "shutdown" => DomainState.ShutOff,
                "internal-error" or "io-error" or "guest-panicked" => DomainState.Crashed,
                _ => DomainState.Unknown,
            };
            return (state, null);
        }
        catch (QmpException ex) when (ex.ErrorClass == "CommandNotFound")
        {
            // qemu-storage-daemon has no run state: a launched one is paused while its guest exports are absent.
            var guests = domain.Options.Disks.Where(d => d.GuestExportName is not null).ToList();
            if (domain.Options.Launch is not null && guests.Count > 0)
            {
                var exports = await qmp.QueryBlockExportsAsync(cancellationToken);
                return guests.All(d => exports.Any(e => e.Id == CaptureNames.GuestExport(d.Target)))
                    ? (DomainState.Running, "qemu-storage-daemon serving its guest exports: stop or pause it first")
                    : (DomainState.Paused, "qemu-storage-daemon without its guest exports");
            }

            // One attached to: its consumers are outside Drydock. It runs while one of them writes to a disk (front node);
            // with none, nothing can change the disks under a restore, which is what "paused" promises.
            var graph = await qmp.QueryBlockGraphAsync(cancellationToken);
            var writer = domain.Options.Disks.SelectMany(d => graph.ParentsOf(d.FrontNodeName).Where(p => p.Edge.Writes).Select(p => (d, p.Parent))).FirstOrDefault();
            return writer.d is null
                ? (DomainState.Paused, "qemu-storage-daemon: nothing writes to its disks")
                : (DomainState.Running,
                    $"qemu-storage-daemon: {QemuBlockGraph.Describe(writer.Parent)} writes to disk '{writer.d.Target}' (front node '{writer.d.FrontNodeName}'); "
                    + "stop that consumer (for an export: QMP block-export-del) so that nothing writes to the disks, then restore");
        }
    }

    private DiskInfo OnlineDisk(QemuDomain domain, QemuDiskOptions disk, IReadOnlyList<QemuBlockNode> nodes)
    {
        var node = nodes.FirstOrDefault(n => n.NodeName == disk.NodeName)
            ?? throw new HypervisorException($"Domain '{domain.Id}' has no block node '{disk.NodeName}' for disk '{disk.Target}'.", domain.Id);
        var qcow2 = node.Driver == DiskFormats.Qcow2;
        var source = node.FileName ?? disk.ImagePath;
        return new DiskInfo
        {
            Target = disk.Target,
            Source = source,
            Format = node.Driver,
            VirtualSize = node.VirtualSize,
            Identity = IdentityOf(domain, disk, source),
            SupportsCheckpoints = qcow2,
            CheckpointsUnsupportedReason = qcow2 ? null : $"the {node.Driver} format cannot store persistent dirty bitmaps",
            ReadOnly = node.ReadOnly,
        };
    }

    private DiskInfo OfflineDisk(QemuDiskOptions disk)
    {
        var qcow2 = disk.Format == DiskFormats.Qcow2;
        return new DiskInfo
        {
            Target = disk.Target,
            Source = disk.ImagePath,
            Format = disk.Format,
            VirtualSize = disk.ImagePath is null ? 0 : OfflineSize(disk),
            Identity = disk.ImagePath is null ? "unknown" : DiskIdentity.Of(disk.ImagePath) ?? "path:" + disk.ImagePath,
            SupportsCheckpoints = qcow2,
            CheckpointsUnsupportedReason = qcow2 ? null : $"the {disk.Format} format cannot store persistent dirty bitmaps",
        };
    }

    private static ulong OfflineSize(QemuDiskOptions disk)
    {
        try
        {
            using var file = File.OpenRead(disk.ImagePath!);
            if (disk.Format != DiskFormats.Qcow2)
            {
                return (ulong)file.Length;
            }

            // qcow2 header: magic "QFI\xfb" at 0, virtual size (big-endian u64) at 24.
            Span<byte> header = stackalloc byte[32];
            file.ReadExactly(header);
            return BinaryPrimitives.ReadUInt32BigEndian(header) == 0x514649fb ? BinaryPrimitives.ReadUInt64BigEndian(header[24..]) : 0;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    private static string IdentityOf(QemuDomain domain, QemuDiskOptions disk, string? source) =>
        source is null || source.StartsWith("json:", StringComparison.Ordinal)
            ? $"node:{disk.NodeName}:{source}"
            : DiskIdentity.Of(domain.HostPath(source)) ?? "path:" + source;

    /// <summary>The domain's monitor connection, connecting if needed; null when the instance is not running.</summary>
    private async Task<QmpClient?> TryConnectAsync(QemuDomain domain, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (domain.Qmp is { IsConnected: true } connected)
        {
            // The instance may have ended a moment ago without the reader having seen the EOF yet: ask.
            try
            {
                await connected.ExecuteAsync("query-version", cancellationToken: cancellationToken);
                return connected;
            }
            catch (Exception ex) when (ex is QmpConnectionException or TimeoutException)
            {
                await ((Task)connected.Closed).WaitAsync(_options.ConnectTimeout, _time, cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }

        await domain.ConnectLock.WaitAsync(cancellationToken);
        try
        {
            if (domain.Qmp is { IsConnected: true } raced)
            {
                return raced;
            }

            QmpClient qmp;
            try
            {
#pragma warning disable CA2000 // Owned by the domain from here on; disposed when the connection ends or the driver is disposed.
                qmp = await QmpClient.ConnectAsync(domain.Options.QmpSocketPath, _qmpOptions, cancellationToken);
#pragma warning restore CA2000
            }
            catch (QmpConnectionException ex)
            {
                Log.NotRunning(_logger, domain.Id, ex.Message);
                return null;
            }

            domain.Qmp = qmp;
            _ = Task.Run(() => MonitorAsync(domain, qmp), CancellationToken.None);
            return qmp;
        }
        finally
        {
            domain.ConnectLock.Release();
        }
    }

    private async Task<QmpClient> ConnectOrThrowAsync(QemuDomain domain, string operation, CancellationToken cancellationToken) =>
        await TryConnectAsync(domain, cancellationToken)
        ?? throw new DomainStateException(domain.Id, DomainState.ShutOff, operation, $"no QMP monitor at {domain.Options.QmpSocketPath}");

    /// <summary>Reports the instance's own events, and its end, as domain events.</summary>
    private async Task MonitorAsync(QemuDomain domain, QmpClient qmp)
    {
        using (var subscription = qmp.SubscribeEvents(e => e.Name is "STOP" or "RESUME" or "SHUTDOWN"))
        {
            try
            {
                await foreach (var qmpEvent in subscription.Reader.ReadAllAsync())
                {
                    var kind = qmpEvent.Name switch
                    {
                        "STOP" => DomainEventKind.Paused,
                        "RESUME" => DomainEventKind.Resumed,
                        _ => (DomainEventKind?)null,
                    };
                    if (kind is { } k)
                    {
                        Publish(domain, k, $"QEMU event {qmpEvent.Name}");
                    }
                }
            }
            catch (Exception ex) when (ex is QmpConnectionException or System.Threading.Channels.ChannelClosedException or OperationCanceledException)
            {
                // The connection ended: handled below.
            }
        }

        await qmp.Closed;
        if (_disposed != 0 || !ReferenceEquals(domain.Qmp, qmp))
        {
            return;
        }

        domain.Qmp = null;
        await qmp.DisposeAsync();
        if (domain.DestroyRequested)
        {
            domain.DestroyRequested = false;
            Publish(domain, DomainEventKind.Stopped, "destroyed");
        }
        else if (domain.PidFileIsStale())
        {
            Publish(domain, DomainEventKind.Crashed, "the instance ended without a clean exit (its pid file remains)");
        }
        else
        {
            Publish(domain, DomainEventKind.Stopped, "the QMP monitor closed");
        }
    }

    private void Publish(QemuDomain domain, DomainEventKind kind, string? detail, string? target = null, string? captureId = null)
    {
        Log.Event(_logger, domain.Id, kind, detail);
        _events.Publish(new DomainEvent(domain.Id, kind, _time.GetUtcNow())
        {
            HostName = HostName,
            Detail = detail,
            Target = target,
            CaptureId = captureId,
        });
    }

    /// <summary>Maps a QMP failure to the model's errors, keeping QEMU's message and class.</summary>
    private HypervisorException Translate(Exception ex, string domainId, string operation, string? target = null) => ex switch
    {
        HypervisorException typed => typed,
        QmpException qmp => new HypervisorException($"Could not {operation} on domain '{domainId}'{(target is null ? string.Empty : $" disk '{target}'")} ({HostName}).", domainId, qmp.Description, qmp.ErrorClass, qmp),
        QmpConnectionException connection => new HypervisorConnectionException($"Lost the QMP monitor of domain '{domainId}' while trying to {operation}: {connection.Message}", domainId, connection),
        TimeoutException timeout => new HypervisorException($"Timed out trying to {operation} on domain '{domainId}': {timeout.Message}", domainId, innerException: timeout),
        _ => new HypervisorException($"Could not {operation} on domain '{domainId}': {ex.Message}", domainId, innerException: ex),
    };
}
