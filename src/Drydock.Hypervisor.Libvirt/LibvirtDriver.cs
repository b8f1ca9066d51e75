using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Drydock.Hypervisor.Libvirt.Interop;
using Drydock.Hypervisor.Libvirt.Xml;
using Drydock.Nbd;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>
/// The libvirt driver: libvirt's upstream backup API (<c>virDomainBackupBegin</c> in pull mode with a
/// <c>&lt;server&gt;</c> and <c>&lt;scratch&gt;</c> files, and push mode), checkpoints (created atomically with a backup,
/// redefined with validation, deleted whole or metadata only), domain events on libvirt's default event loop, all
/// through P/Invoke into libvirt.so.0. See docs/HYPERVISORS.md for what was exercised against libvirt 9.0.
/// </summary>
/// <remarks>
/// <para>Captures are tagged by name: the capture id (<c>drydock-cap-XXXXXXXX</c>) names the NBD socket and every scratch
/// file, and the checkpoint a capture creates carries <c>drydock capture ID</c> in its description, so that a capture an
/// earlier process left behind is found again from libvirt's job XML (FAULTS.md F03).</para>
/// <para>Bitmap state (present, recording, busy, inconsistent) of a running domain is read from QEMU with
/// <c>query-named-block-nodes</c> through <c>virDomainQemuMonitorCommand</c> — libvirt 9.0 has no API for it — and of a
/// shut-off domain's local images with <c>qemu-img info</c>.</para>
/// <para>When libvirtd goes away (F20: restarted during a backup), libvirt closes the connection. The driver reconnects
/// (at once in the background, and from any call that fails on the closed connection, which waits up to
/// <see cref="LibvirtDriverOptions.ReconnectTimeout"/>), moves its event registrations over (subscribers get
/// <see cref="DomainEventKind.EventsLost"/>) and checks every capture it holds: one whose backup job and NBD socket are
/// still there goes on (QEMU serves the export; libvirt 9.0 keeps pull jobs across a restart); any other is published
/// as <see cref="DomainEventKind.CaptureBroken"/> and can no longer be committed. Reads are repeated on the new
/// connection; calls that change something are not (they may have taken effect) and fail with
/// <see cref="HypervisorConnectionException"/>.</para>
/// </remarks>
public sealed partial class LibvirtDriver : IHypervisorDriver
{
    /// <summary>The driver's name in <see cref="HypervisorCapabilities.Driver"/>.</summary>
    public const string DriverName = "libvirt";

    /// <summary>Prefix of capture ids (and of their sockets and scratch files).</summary>
    public const string CapturePrefix = DrydockNames.Prefix + "cap-";

    /// <summary>Prefix of restore export ids.</summary>
    public const string RestorePrefix = DrydockNames.Prefix + "rst-";

    private const string CaptureDescriptionPrefix = "drydock capture ";

    private static readonly TimeSpan JobEndTimeout = TimeSpan.FromSeconds(60);

    private readonly LibvirtDriverOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly LibvirtWorker _worker;
    private readonly LibvirtEvents _events;
    private readonly QemuTools _tools;
    private readonly ConcurrentDictionary<string, CaptureRecord> _captures = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _domainLocks = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, RestoreRecord> _restores = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> _brokenCaptures = new(StringComparer.Ordinal);
    private readonly Lock _connectionLock = new();
    private readonly List<LibvirtConnection> _closedConnections = [];
    private LibvirtConnection _connection;
    private int _disposed;
    private int _reconnecting;

    private LibvirtDriver(LibvirtDriverOptions options, TimeProvider timeProvider, ILogger logger, LibvirtWorker worker, LibvirtConnection connection, LibvirtEvents events, string hostName)
    {
        _options = options;
        _timeProvider = timeProvider;
        _logger = logger;
        _worker = worker;
        _connection = connection;
        _events = events;
        _tools = new QemuTools(options);
        HostName = hostName;
    }

    /// <inheritdoc/>
    public string HostName { get; }

    /// <inheritdoc/>
    public HypervisorCapabilities Capabilities { get; } = new()
    {
        Driver = DriverName,
        Checkpoints = true,
        CheckpointMetadata = true,
        DifferentialCaptures = true,
        RestoreExports = true,
        Lifecycle = true,
        Events = true,
        DiskGenerations = false,
    };

    /// <summary>Connects to libvirt: starts the default event loop (once per process), opens the connection, registers events.</summary>
    /// <param name="options">Where and how.</param>
    /// <param name="timeProvider">The clock; default the system clock.</param>
    /// <param name="logger">The logger; default none.</param>
    /// <param name="cancellationToken">Cancels before the connection is attempted.</param>
    /// <returns>The driver; dispose it to disconnect.</returns>
    /// <exception cref="HypervisorConnectionException">libvirt could not be reached.</exception>
    public static async Task<LibvirtDriver> ConnectAsync(LibvirtDriverOptions options, TimeProvider? timeProvider = null, ILogger<LibvirtDriver>? logger = null, CancellationToken cancellationToken = default)
    {
        var clock = timeProvider ?? TimeProvider.System;
        var log = (ILogger?)logger ?? NullLogger.Instance;
        var worker = new LibvirtWorker(Math.Max(1, options.WorkerThreads), "libvirt");
        try
        {
            var (connection, events, hostName, version) = await worker.RunAsync(() =>
            {
                LibvirtConnection? opened = null;
                try
                {
                    LibvirtEventLoop.EnsureStarted();
                    opened = Open(options);
                    var host = options.HostName ?? opened.GetHostName();
                    var events = LibvirtEvents.Register(opened, host, clock);
                    var v = opened.GetLibVersion();
                    return (opened, events, host, string.Create(CultureInfo.InvariantCulture, $"{v / 1_000_000}.{v / 1000 % 1000}.{v % 1000}"));
                }
                catch (LibvirtNativeException ex)
                {
                    opened?.Dispose();
                    throw LibvirtErrorMapper.Map(ex.Error, LibvirtOperationKind.Connect, $"connect to {options.Uri}", options.HostName ?? options.Uri);
                }
                catch (DllNotFoundException ex)
                {
                    throw new HypervisorConnectionException($"libvirt.so.0 is not installed on this machine (Debian package libvirt0): {ex.Message}", innerException: ex);
                }
            }, cancellationToken);
            var driver = new LibvirtDriver(options, clock, log, worker, connection, events, hostName);
            events.PausedOnIoError = driver.OnPausedOnIoError;
            events.ConnectionClosed = driver.OnConnectionClosed;
            driver.LogConnected(options.Uri, hostName, version);
            return driver;
        }
        catch
        {
            worker.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<DomainInfo>> ListDomainsAsync(CancellationToken cancellationToken = default) =>
        RunAsync("list domains", LibvirtOperationKind.General, null, () =>
        {
            var result = new List<DomainInfo>();
            foreach (var domain in _connection.ListAllDomains())
            {
                using (domain)
                {
                    result.Add(Describe(domain));
                }
            }

            return (IReadOnlyList<DomainInfo>)result;
        }, cancellationToken, repeatable: true);

    /// <inheritdoc/>
    public Task<DomainInfo> GetDomainAsync(string domainId, CancellationToken cancellationToken = default) =>
        RunAsync("describe the domain", LibvirtOperationKind.General, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            return Describe(domain);
        }, cancellationToken, repeatable: true);

    /// <inheritdoc/>
    public Task<DomainDefinition> GetDefinitionAsync(string domainId, CancellationToken cancellationToken = default) =>
        RunAsync("read the domain XML", LibvirtOperationKind.General, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            return new DomainDefinition(DomainDefinition.LibvirtXml, LibvirtConnection.GetXmlDesc(domain, NativeMethods.DomainXmlInactive));
        }, cancellationToken, repeatable: true);

    /// <inheritdoc/>
    public async Task<Capture> BeginCaptureAsync(CaptureRequest request, CancellationToken cancellationToken = default)
    {
        ValidateRequest(request);
        var gate = _domainLocks.GetOrAdd(request.DomainId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            var capture = await RunAsync("begin a capture", LibvirtOperationKind.Capture, request.DomainId, () => BeginCapture(request), cancellationToken, request.NewCheckpoint);
            if (cancellationToken.IsCancellationRequested)
            {
                await ReleaseCoreAsync(request.DomainId, capture.Id, CaptureOutcome.Abandoned, CancellationToken.None);
                cancellationToken.ThrowIfCancellationRequested();
            }

            return capture;
        }
        finally
        {
            gate.Release();
        }
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<CaptureSummary>> ListCapturesAsync(string? domainId = null, CancellationToken cancellationToken = default) =>
        RunAsync("list captures", LibvirtOperationKind.General, domainId, () =>
        {
            var result = new List<CaptureSummary>();
            if (domainId is not null)
            {
                using var domain = OpenDomain(domainId);
                AddCaptures(domain, result);
            }
            else
            {
                foreach (var domain in _connection.ListAllDomains())
                {
                    using (domain)
                    {
                        AddCaptures(domain, result);
                    }
                }
            }

            return (IReadOnlyList<CaptureSummary>)result;
        }, cancellationToken, repeatable: true);

    /// <inheritdoc/>
    public async Task<bool> ReleaseCaptureAsync(string domainId, string captureId, CaptureOutcome outcome, CancellationToken cancellationToken = default)
    {
        var gate = _domainLocks.GetOrAdd(domainId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            return await ReleaseCoreAsync(domainId, captureId, outcome, cancellationToken);
        }
        finally
        {
            gate.Release();
        }
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<CheckpointInfo>> ListCheckpointsAsync(string domainId, CancellationToken cancellationToken = default) =>
        RunAsync("list checkpoints", LibvirtOperationKind.General, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            var uuid = LibvirtConnection.GetUuid(domain);
            var result = new List<CheckpointInfo>();
            foreach (var (_, xml) in LibvirtConnection.ListCheckpoints(domain))
            {
                var document = CheckpointXml.Parse(xml);
                result.Add(new CheckpointInfo
                {
                    Name = document.Name,
                    DomainId = uuid,
                    CreatedAt = document.CreationTime,
                    Parent = document.Parent,
                    Disks = document.BitmapDisks,
                    HasMetadata = true,
                });
            }

            // Drydock bitmaps QEMU holds without libvirt metadata (lost by undefine/define, F05; left by a crash, F02).
            if (ReadNodeBitmaps(domain, uuid) is { } nodes)
            {
                var domainXml = DomainXml.Parse(LibvirtConnection.GetXmlDesc(domain));
                var orphans = new Dictionary<string, List<CheckpointDisk>>(StringComparer.Ordinal);
                foreach (var disk in domainXml.Disks)
                {
                    if (disk.FormatNodeName is { } node && nodes.TryGetValue(node, out var bitmaps))
                    {
                        foreach (var bitmap in bitmaps.Where(b => DrydockNames.IsOwned(b.Name) && !result.Any(c => c.Disks.Any(d => d.Target == disk.Target && d.Bitmap == b.Name))))
                        {
                            (orphans.TryGetValue(bitmap.Name, out var list) ? list : orphans[bitmap.Name] = []).Add(new CheckpointDisk(disk.Target, bitmap.Name));
                        }
                    }
                }

                result.AddRange(orphans.Select(o => new CheckpointInfo { Name = o.Key, DomainId = uuid, Disks = o.Value, HasMetadata = false }));
            }

            return (IReadOnlyList<CheckpointInfo>)result;
        }, cancellationToken, repeatable: true);

    /// <inheritdoc/>
    public Task<string> GetCheckpointXmlAsync(string domainId, string checkpoint, CancellationToken cancellationToken = default) =>
        RunAsync("read the checkpoint XML", LibvirtOperationKind.Checkpoint, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            using var handle = LibvirtConnection.LookupCheckpoint(domain, checkpoint)
                ?? throw new CheckpointNotFoundException(domainId, checkpoint);
            // With the embedded <domain>: libvirt needs it to redefine the checkpoint later (REAL-STACK.md).
            return LibvirtConnection.GetCheckpointXml(handle, 0);
        }, cancellationToken, checkpoint, repeatable: true);

    /// <inheritdoc/>
    public Task<CheckpointInfo> CreateCheckpointAsync(string domainId, string checkpoint, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default)
    {
        DrydockNames.ValidateOwnedCheckpoint(domainId, checkpoint);
        return RunAsync("create a checkpoint", LibvirtOperationKind.Checkpoint, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            var uuid = LibvirtConnection.GetUuid(domain);
            var domainXml = DomainXml.Parse(LibvirtConnection.GetXmlDesc(domain));
            foreach (var target in targets ?? [])
            {
                _ = domainXml.FindDisk(target) ?? throw new DiskNotFoundException(uuid, target);
            }

            var included = domainXml.Disks.Where(d => d.SupportsCheckpoints && (targets is null || targets.Contains(d.Target))).Select(d => d.Target).ToHashSet(StringComparer.Ordinal);
            using (var existing = LibvirtConnection.LookupCheckpoint(domain, checkpoint))
            {
                if (existing is not null)
                {
                    throw new CheckpointExistsException(uuid, checkpoint);
                }
            }

            var document = new CheckpointDocument
            {
                Name = checkpoint,
                Disks = [.. domainXml.Disks.Select(d => new CheckpointDocumentDisk(d.Target, included.Contains(d.Target) ? checkpoint : null))],
            };
            LibvirtConnection.CreateCheckpoint(domain, FormatCheckpointForCreate(document), 0);
            LogCheckpoint(checkpoint, uuid, "created");
            return new CheckpointInfo
            {
                Name = checkpoint,
                DomainId = uuid,
                CreatedAt = _timeProvider.GetUtcNow(),
                Disks = document.BitmapDisks,
                HasMetadata = true,
            };
        }, cancellationToken, checkpoint);
    }

    /// <inheritdoc/>
    public Task<CheckpointInfo> RedefineCheckpointAsync(string domainId, string checkpointXml, CancellationToken cancellationToken = default)
    {
        var document = CheckpointXml.Parse(checkpointXml);
        DrydockNames.ValidateOwnedCheckpoint(domainId, document.Name);
        return RunAsync("redefine the checkpoint with validation", LibvirtOperationKind.Checkpoint, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            var uuid = LibvirtConnection.GetUuid(domain);

            // Validate first where QEMU can tell which disk's bitmap is unusable; libvirt's own validation follows.
            if (ReadNodeBitmaps(domain, uuid) is { } nodes)
            {
                var domainXml = DomainXml.Parse(LibvirtConnection.GetXmlDesc(domain));
                foreach (var disk in document.BitmapDisks)
                {
                    var bitmaps = domainXml.FindDisk(disk.Target)?.FormatNodeName is { } node && nodes.TryGetValue(node, out var list) ? list : [];
                    var bitmap = bitmaps.FirstOrDefault(b => b.Name == disk.Bitmap);
                    if (bitmap is null || bitmap.Inconsistent)
                    {
                        throw new CheckpointInconsistentException(uuid, document.Name, disk.Target, bitmap is null
                            ? $"disk '{disk.Target}' has no bitmap '{disk.Bitmap}'."
                            : $"the bitmap '{disk.Bitmap}' of disk '{disk.Target}' is inconsistent.");
                    }
                }
            }

            try
            {
                LibvirtConnection.CreateCheckpoint(domain, checkpointXml, NativeMethods.CheckpointCreateRedefine | NativeMethods.CheckpointCreateRedefineValidate);
            }
            catch (LibvirtNativeException ex) when (!LibvirtErrorMapper.IsBusy(ex.Error) && ex.Error.Code != LibvirtErrorCodes.NoDomain)
            {
                // REDEFINE_VALIDATE fails when a bitmap is missing or unusable: that is the F05 "else FF" signal.
                throw new CheckpointInconsistentException(uuid, document.Name, null, "libvirt refused to redefine it with validation.", ex.Error.Message, ex.Error.CodeName);
            }

            LogCheckpoint(document.Name, uuid, "redefined and validated");
            return new CheckpointInfo
            {
                Name = document.Name,
                DomainId = uuid,
                CreatedAt = document.CreationTime,
                Parent = document.Parent,
                Disks = document.BitmapDisks,
                HasMetadata = true,
            };
        }, cancellationToken, document.Name);
    }

    /// <inheritdoc/>
    public async Task DeleteCheckpointAsync(string domainId, string checkpoint, CheckpointDeleteMode mode = CheckpointDeleteMode.All, CancellationToken cancellationToken = default)
    {
        if (!DrydockNames.IsOwned(checkpoint))
        {
            throw new ForeignCheckpointException(domainId, checkpoint);
        }

        var gate = _domainLocks.GetOrAdd(domainId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            await RunAsync("delete the checkpoint", LibvirtOperationKind.Checkpoint, domainId, () =>
            {
                using var domain = OpenDomain(domainId);
                var uuid = LibvirtConnection.GetUuid(domain);
                if (LibvirtConnection.BackupGetXmlDesc(domain) is { } jobXml)
                {
                    var job = BackupXml.Parse(jobXml);
                    var owner = CaptureIdOf(job);
                    var usesIt = job.Disks.Any(d => d.Incremental == checkpoint) || job.Incremental == checkpoint
                        || (owner is not null && _captures.TryGetValue(owner, out var record) && record.NewCheckpoint == checkpoint)
                        || (owner is not null && FindCaptureCheckpoint(domain, owner) == checkpoint);
                    if (usesIt)
                    {
                        throw new DomainBusyException(uuid, owner, $"Checkpoint '{checkpoint}' is used by the running backup job.");
                    }
                }

                DeleteCheckpointCore(domain, uuid, checkpoint, mode, mustExist: true);
                return true;
            }, cancellationToken, checkpoint);
        }
        finally
        {
            gate.Release();
        }
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<DiskHealth>> GetDiskHealthAsync(string domainId, CancellationToken cancellationToken = default) =>
        RunAsync("read disk health", LibvirtOperationKind.General, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            return ComputeHealth(domain);
        }, cancellationToken, repeatable: true);

    /// <inheritdoc/>
    public Task<RestoreExport> OpenRestoreExportAsync(string domainId, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default) =>
        RunAsync("open a restore export", LibvirtOperationKind.General, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            var uuid = LibvirtConnection.GetUuid(domain);
            var state = MapState(LibvirtConnection.GetState(domain));
            if (state is not (DomainState.ShutOff or DomainState.Crashed or DomainState.Paused))
            {
                throw new DomainStateException(uuid, state, "open a writable restore export");
            }

            if (_restores.Values.Any(r => r.DomainId == uuid))
            {
                throw new DomainBusyException(uuid, null, "A restore export of this domain is open.");
            }

            if (LibvirtConnection.BackupGetXmlDesc(domain) is { } jobXml)
            {
                throw new DomainBusyException(uuid, CaptureIdOf(BackupXml.Parse(jobXml)), "A backup job is running on the domain.");
            }

            LibvirtWorkDirectories.Prepare(_options);

            // libvirt 9.0 has no writable export API, and QEMU refuses a writable NBD export of a started domain's disk
            // (the guest device does not share write permission). A paused domain's guest state cannot survive its disks
            // being rewritten anyway, so QEMU is stopped (cleanly: bitmaps are stored), the images are served by
            // qemu-nbd, and closing the export starts the domain paused again. Those internal stop/start events are not
            // published.
            var restartPaused = state == DomainState.Paused;
            if (restartPaused)
            {
                _events.Suppress(uuid, DomainEventKind.Stopped);
                LibvirtConnection.Destroy(domain);
            }

            var domainXml = DomainXml.Parse(LibvirtConnection.GetXmlDesc(domain, NativeMethods.DomainXmlInactive));
            var disks = targets is null ? domainXml.Disks.Where(d => !d.ReadOnly).ToList() : [.. targets.Select(t => domainXml.FindDisk(t) ?? throw new DiskNotFoundException(uuid, t))];
            var id = RestorePrefix + DrydockNames.RandomSuffix();
            var processes = new List<RestoreExportProcess>();
            try
            {
                foreach (var disk in disks)
                {
                    if (disk.Type is not ("file" or "block") || disk.Source is null)
                    {
                        throw new HypervisorNotSupportedException($"restore exports of {disk.Type} disks (disk '{disk.Target}')", DriverName, uuid);
                    }

                    var size = LibvirtConnection.GetBlockInfo(domain, disk.Target).Capacity;
                    processes.Add(RestoreExportProcess.Start(_options.QemuNbdPath, disk.Source, disk.Format, disk.Target,
                        Path.Combine(_options.SocketDirectory, $"{id}.{disk.Target}.sock"), size, _options.RestoreExportStartTimeout));
                }
            }
            catch (Exception ex)
            {
                processes.ForEach(p => p.Dispose());
                if (restartPaused)
                {
                    RestartPaused(domain, uuid);
                }

                throw ex is InvalidOperationException
                    ? new HypervisorException($"Could not open a restore export of domain '{uuid}' on host '{HostName}': {ex.Message}", uuid, innerException: ex)
                    : ex;
            }

            _restores[id] = new RestoreRecord(uuid, processes, restartPaused);
            LogRestoreExport(id, uuid, "opened");
            return new RestoreExport
            {
                Id = id,
                DomainId = uuid,
                Disks = [.. processes.Select(p => new RestoreExportDisk(p.Target, NbdUri.ForUnixSocket(p.SocketPath, p.Target), p.VirtualSize))],
            };
        }, cancellationToken);

    /// <inheritdoc/>
    public Task<bool> CloseRestoreExportAsync(string domainId, string exportId, CancellationToken cancellationToken = default) =>
        _worker.RunAsync(() =>
        {
            if (!_restores.TryRemove(exportId, out var record))
            {
                return false;
            }

            foreach (var process in record.Processes)
            {
                process.Dispose();
            }

            if (record.RestartPaused)
            {
                try
                {
                    using var domain = OpenDomain(record.DomainId);
                    RestartPaused(domain, record.DomainId);
                }
                catch (LibvirtNativeException ex)
                {
                    throw LibvirtErrorMapper.Map(ex.Error, LibvirtOperationKind.General, "start the domain paused again after the restore", HostName, record.DomainId);
                }
            }

            LogRestoreExport(exportId, record.DomainId, "closed");
            return true;
        }, cancellationToken);

    /// <inheritdoc/>
    public Task StartAsync(string domainId, bool paused = false, CancellationToken cancellationToken = default) =>
        RunAsync(paused ? "start the domain paused" : "start the domain", LibvirtOperationKind.General, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            if (_restores.Values.Any(r => r.DomainId == LibvirtConnection.GetUuid(domain)))
            {
                throw new DomainBusyException(domainId, null, "A restore export of this domain is open: close it before starting the domain.");
            }

            LibvirtConnection.Start(domain, paused);
            return true;
        }, cancellationToken);

    /// <inheritdoc/>
    public Task ResumeAsync(string domainId, CancellationToken cancellationToken = default) =>
        RunAsync("resume the domain", LibvirtOperationKind.General, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            LibvirtConnection.Resume(domain);
            return true;
        }, cancellationToken);

    /// <inheritdoc/>
    public Task DestroyAsync(string domainId, CancellationToken cancellationToken = default) =>
        RunAsync("destroy the domain", LibvirtOperationKind.General, domainId, () =>
        {
            using var domain = OpenDomain(domainId);
            LibvirtConnection.Destroy(domain);
            return true;
        }, cancellationToken);

    /// <inheritdoc/>
    public IAsyncEnumerable<DomainEvent> WatchEventsAsync(CancellationToken cancellationToken = default) => _events.Subscribe(cancellationToken);

    /// <summary>
    /// A push-mode backup: libvirt copies the chosen disks (in full, or the blocks changed since a checkpoint) into qcow2
    /// files, optionally creating a checkpoint atomically with the job; completion is the JOB_COMPLETED event. An
    /// incremental push target names the live disk as its backing file (rebase it before using it for a restore).
    /// </summary>
    /// <param name="request">What to back up and where.</param>
    /// <param name="cancellationToken">Aborts the job.</param>
    /// <returns>The files written.</returns>
    /// <exception cref="CaptureFailedException">The job failed; its files and new checkpoint were removed.</exception>
    public async Task<PushBackupResult> PushBackupAsync(PushBackupRequest request, CancellationToken cancellationToken = default)
    {
        if (request.NewCheckpoint is not null)
        {
            DrydockNames.ValidateOwnedCheckpoint(request.DomainId, request.NewCheckpoint);
        }

        var gate = _domainLocks.GetOrAdd(request.DomainId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        string? uuid = null;
        Task<LibvirtJobCompletion>? completion = null;
        try
        {
            (uuid, completion, var files) = await RunAsync("begin a push backup", LibvirtOperationKind.Capture, request.DomainId, () =>
            {
                using var domain = OpenDomain(request.DomainId);
                var id = LibvirtConnection.GetUuid(domain);
                EnsureNotBusy(domain, id);
                var domainXml = DomainXml.Parse(LibvirtConnection.GetXmlDesc(domain));
                var targets = request.Targets.Select(t => domainXml.FindDisk(t) ?? throw new DiskNotFoundException(id, t)).ToList();
                var files = targets.ToDictionary(d => d.Target, d => Path.Combine(request.TargetDirectory, $"{d.Target}.qcow2"), StringComparer.Ordinal);
                var backup = new BackupXml
                {
                    Mode = "push",
                    Disks = [.. domainXml.Disks.Select(d => files.TryGetValue(d.Target, out var file)
                        ? new BackupDisk
                        {
                            Name = d.Target,
                            BackupMode = request.SinceCheckpoint is null ? "full" : "incremental",
                            Incremental = request.SinceCheckpoint,
                            TargetFile = file,
                            TargetFormat = DiskFormats.Qcow2,
                        }
                        : new BackupDisk { Name = d.Target, Backup = false })],
                };
                string? checkpointXml = null;
                if (request.NewCheckpoint is { } name)
                {
                    checkpointXml = FormatCheckpointForCreate(new CheckpointDocument
                    {
                        Name = name,
                        Disks = [.. domainXml.Disks.Select(d => new CheckpointDocumentDisk(d.Target, files.ContainsKey(d.Target) && d.SupportsCheckpoints ? name : null))],
                    });
                }

                var waiter = _events.WaitForJobAsync(id);
                try
                {
                    LibvirtConnection.BackupBegin(domain, backup.Format(), checkpointXml);
                }
                catch
                {
                    _events.StopWaitingForJob(id);
                    throw;
                }

                return (id, waiter, (IReadOnlyDictionary<string, string>)files);
            }, cancellationToken, request.NewCheckpoint);

            var outcome = await WaitForPushAsync(uuid, completion, cancellationToken);
            await RunAsync("wait for the push backup to end", LibvirtOperationKind.General, uuid, () =>
            {
                // JOB_COMPLETED comes before libvirt has closed the target files: wait until the job is gone and
                // QEMU has let go of every file (its image lock is released when the target node is deleted).
                using var domain = OpenDomain(uuid);
                WaitForJobEnd(domain, uuid, "push");
                foreach (var file in files.Values.Where(File.Exists))
                {
                    _tools.WaitUntilUnlocked(file, JobEndTimeout);
                }

                return true;
            }, CancellationToken.None);
            LogPushFinished(uuid, outcome.Succeeded);
            if (!outcome.Succeeded)
            {
                await CleanUpFailedPushAsync(uuid, request, files);
                throw new CaptureFailedException(uuid, $"The push backup of domain '{uuid}' on host '{HostName}' failed.", hypervisorMessage: outcome.ErrorMessage);
            }

            return new PushBackupResult(uuid, files, request.NewCheckpoint);
        }
        catch (OperationCanceledException) when (uuid is not null)
        {
            await RunAsync("abort the push backup", LibvirtOperationKind.General, uuid, () =>
            {
                using var domain = OpenDomain(uuid);
                if (LibvirtConnection.BackupGetXmlDesc(domain) is not null)
                {
                    LibvirtConnection.AbortJob(domain);
                }

                return true;
            }, CancellationToken.None);
            throw;
        }
        finally
        {
            if (uuid is not null)
            {
                _events.StopWaitingForJob(uuid);
            }

            gate.Release();
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        try
        {
            await _worker.RunAsync(() =>
            {
                foreach (var id in _restores.Keys)
                {
                    if (_restores.TryRemove(id, out var record))
                    {
                        record.Processes.ForEach(p => p.Dispose());
                    }
                }

                lock (_connectionLock)
                {
                    _events.Dispose();
                    _closedConnections.ForEach(c => c.Dispose());
                }

                _connection.Dispose();

                return true;
            }, CancellationToken.None);
        }
        finally
        {
            _worker.Dispose();
            foreach (var gate in _domainLocks.Values)
            {
                gate.Dispose();
            }
        }
    }

    /// <summary>The capture id a job's XML carries in its socket or scratch file names, or null when it is not Drydock's.</summary>
    internal static string? CaptureIdOf(BackupXml job)
    {
        foreach (var path in job.Disks.Select(d => d.ScratchFile).Append(job.Server?.Socket))
        {
            if (path is not null && CaptureIdPattern().Match(Path.GetFileName(path)) is { Success: true } match)
            {
                return match.Groups[1].Value;
            }
        }

        return null;
    }

    /// <summary>An opaque identity of a disk image: format, source, and the file's device and inode where it is local.</summary>
    internal static string DiskIdentity(LibvirtDisk disk)
    {
        var text = new StringBuilder().Append(disk.Type).Append('|').Append(disk.Format).Append('|').Append(disk.Source);
        if (disk.Type is "file" or "block" && disk.Source is not null && LibcNativeMethods.TryGetDeviceAndInode(disk.Source, out var device, out var inode))
        {
            text.Append(CultureInfo.InvariantCulture, $"|{device}:{inode}");
        }

        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())))[..32];
    }

    /// <summary>Maps libvirt's state and reason to the model.</summary>
    internal static DomainState MapState((int State, int Reason) state) => state.State switch
    {
        1 or 2 or 4 => DomainState.Running,
        3 or 7 => DomainState.Paused,
        5 => state.Reason == 3 ? DomainState.Crashed : DomainState.ShutOff,
        6 => DomainState.Crashed,
        _ => DomainState.Unknown,
    };

    /// <summary>
    /// F17 on libvirt 9.0: libvirt runs pull backups without QEMU's <c>on-cbw-error=break-snapshot</c>, so when the scratch
    /// space runs out the guest's write fails and QEMU pauses the domain (error policy <c>enospc</c>), the write kept for
    /// a retry. When that happens during one of this driver's captures, the driver breaks the snapshot instead of the
    /// guest: it aborts the backup job (the capture's reads then fail), publishes <see cref="DomainEventKind.CaptureBroken"/>
    /// and resumes the domain, which retries the write without the copy-before-write step.
    /// </summary>
    private void OnPausedOnIoError(string uuid)
    {
        var capture = _captures.FirstOrDefault(c => c.Value.DomainId == uuid).Key;
        if (capture is null || Volatile.Read(ref _disposed) == 1)
        {
            return;
        }

        _ = _worker.RunAsync(() =>
        {
            try
            {
                using var domain = OpenDomain(uuid);
                if (LibvirtConnection.BackupGetXmlDesc(domain) is { } xml && CaptureIdOf(BackupXml.Parse(xml)) == capture)
                {
                    LibvirtConnection.AbortJob(domain);
                    WaitForJobEnd(domain, uuid, capture);
                    _events.Publish(new DomainEvent(uuid, DomainEventKind.CaptureBroken, _timeProvider.GetUtcNow())
                    {
                        HostName = HostName,
                        CaptureId = capture,
                        Detail = "the domain paused on an I/O error during the capture (scratch space exhausted?): the backup job was aborted and the domain resumed",
                    });
                    if (MapState(LibvirtConnection.GetState(domain)) == DomainState.Paused)
                    {
                        LibvirtConnection.Resume(domain);
                    }

                    LogCaptureBroken(capture, uuid);
                }
            }
            catch (Exception ex) when (ex is LibvirtNativeException or HypervisorException or FormatException)
            {
                LogCleanupFailed(capture, uuid, "breaking the capture after an I/O error pause", ex.Message);
            }

            return true;
        }, CancellationToken.None);
    }

    [GeneratedRegex("^(" + CapturePrefix + "[0-9a-f]{8})\\.")]
    private static partial Regex CaptureIdPattern();

    private static void ValidateRequest(CaptureRequest request)
    {
        if (request.Disks.Count == 0)
        {
            throw new ArgumentException($"A capture of domain '{request.DomainId}' needs at least one disk.", nameof(request));
        }

        var duplicate = request.Disks.GroupBy(d => d.Target, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Disk '{duplicate.Key}' appears twice in the capture request of domain '{request.DomainId}'.", nameof(request));
        }

        if (request.NewCheckpoint is not null)
        {
            DrydockNames.ValidateOwnedCheckpoint(request.DomainId, request.NewCheckpoint);
        }

        foreach (var disk in request.Disks)
        {
            if (disk.SinceCheckpoint is not null)
            {
                // Never read changes since a checkpoint another tool owns (F15): its bitmap is not ours to trust.
                DrydockNames.ValidateOwnedCheckpoint(request.DomainId, disk.SinceCheckpoint);
            }
        }
    }

    private static string FormatCheckpointForCreate(CheckpointDocument document) => CheckpointXml.Format(document);

    private Capture BeginCapture(CaptureRequest request)
    {
        using var domain = OpenDomain(request.DomainId);
        var uuid = LibvirtConnection.GetUuid(domain);
        var state = MapState(LibvirtConnection.GetState(domain));
        if (state is not (DomainState.Running or DomainState.Paused))
        {
            throw new DomainStateException(uuid, state, "begin a capture");
        }

        EnsureNotBusy(domain, uuid);
        var domainXml = DomainXml.Parse(LibvirtConnection.GetXmlDesc(domain));
        var disks = request.Disks.Select(d => (Request: d, Disk: domainXml.FindDisk(d.Target) ?? throw new DiskNotFoundException(uuid, d.Target))).ToList();
        if (request.NewCheckpoint is { } newName)
        {
            using var taken = LibvirtConnection.LookupCheckpoint(domain, newName);
            if (taken is not null)
            {
                throw new CheckpointExistsException(uuid, newName);
            }
        }

        // Bitmap state matters only for incremental/differential disks: a full capture skips the QEMU monitor round trip.
        var incremental = disks.Any(d => d.Request.SinceCheckpoint is not null);
        var health = incremental
            ? ComputeHealth(domain, domainXml, state).ToDictionary(h => h.Target, StringComparer.Ordinal)
            : new Dictionary<string, DiskHealth>(StringComparer.Ordinal);
        var checkpoints = incremental
            ? LibvirtConnection.ListCheckpoints(domain).ToDictionary(c => c.Name, c => CheckpointXml.Parse(c.Xml), StringComparer.Ordinal)
            : new Dictionary<string, CheckpointDocument>(StringComparer.Ordinal);
        var fullReasons = new Dictionary<string, FullReadReason>(StringComparer.Ordinal);
        foreach (var (diskRequest, disk) in disks)
        {
            if (diskRequest.SinceCheckpoint is not { } since)
            {
                continue;
            }

            if (BaseProblem(uuid, disk, since, checkpoints, health[disk.Target]) is { } reason)
            {
                if (!request.FallBackToFull)
                {
                    throw reason.Code is FullReadCode.CheckpointMissing
                        ? new CheckpointNotFoundException(uuid, since, hypervisorMessage: reason.Message)
                        : reason.Code is FullReadCode.BitmapMissing
                            ? new CheckpointNotFoundException(uuid, since, disk.Target, reason.Message)
                            : new CheckpointInconsistentException(uuid, since, disk.Target, reason.Message);
                }

                fullReasons[disk.Target] = reason;
            }
        }

        LibvirtWorkDirectories.Prepare(_options);
        var captureId = CapturePrefix + DrydockNames.RandomSuffix();
        var sizes = disks.ToDictionary(d => d.Disk.Target, d => LibvirtConnection.GetBlockInfo(domain, d.Disk.Target).Capacity, StringComparer.Ordinal);
        var granularities = health.Values.SelectMany(h => h.Bitmaps).GroupBy(b => b.Checkpoint, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First().Granularity, StringComparer.Ordinal);
        var (server, endpointFor) = CreateServer(uuid, captureId);
        DateTimeOffset capturedAt;
        BackupXml job;
        while (true)
        {
            var backup = new BackupXml
            {
                Mode = "pull",
                Server = server,
                Disks = [.. domainXml.Disks.Select(d => disks.FirstOrDefault(x => x.Disk.Target == d.Target) is { Disk: not null } chosen
                    ? new BackupDisk
                    {
                        Name = d.Target,
                        BackupMode = chosen.Request.SinceCheckpoint is not null && !fullReasons.ContainsKey(d.Target) ? "incremental" : "full",
                        Incremental = chosen.Request.SinceCheckpoint is not null && !fullReasons.ContainsKey(d.Target) ? chosen.Request.SinceCheckpoint : null,
                        ExportName = d.Target,
                        ScratchFile = Path.Combine(_options.ScratchDirectory, $"{captureId}.{d.Target}.qcow2"),
                    }
                    : new BackupDisk { Name = d.Target, Backup = false })],
            };
            string? checkpointXml = null;
            if (request.NewCheckpoint is { } name)
            {
                checkpointXml = FormatCheckpointForCreate(new CheckpointDocument
                {
                    Name = name,
                    Description = CaptureDescriptionPrefix + captureId,
                    Disks = [.. domainXml.Disks.Select(d => new CheckpointDocumentDisk(d.Target, disks.Any(x => x.Disk.Target == d.Target) && d.SupportsCheckpoints ? name : null))],
                });
            }

            capturedAt = _timeProvider.GetUtcNow();
            try
            {
                LibvirtConnection.BackupBegin(domain, backup.Format(), checkpointXml);
                break;
            }
            catch (LibvirtNativeException ex) when (request.FallBackToFull && IsBaseUnusable(ex.Error) && backup.Disks.Any(d => d.Incremental is not null))
            {
                // libvirt's own check at backup-begin caught a bitmap the health check could not see: those disks go full.
                foreach (var disk in backup.Disks.Where(d => d.Incremental is not null))
                {
                    fullReasons[disk.Name] = new FullReadReason(FullReadCode.BitmapInconsistent, $"libvirt refused an incremental read of disk '{disk.Name}' since '{disk.Incremental}': {ex.Error.Message}");
                }
            }
            catch (LibvirtNativeException ex) when (request.NewCheckpoint is not null && ex.Error.Message.Contains("already exists", StringComparison.OrdinalIgnoreCase))
            {
                // F02: QEMU still holds a bitmap of that name (a checkpoint whose metadata was lost, or left by a crash).
                throw new CheckpointExistsException(uuid, request.NewCheckpoint, hypervisorMessage: ex.Error.Message, hypervisorCode: ex.Error.CodeName);
            }
        }

        try
        {
            job = BackupXml.Parse(LibvirtConnection.BackupGetXmlDesc(domain)
                ?? throw new CaptureFailedException(uuid, $"The backup job of capture '{captureId}' vanished right after it began."));
            var captureDisks = new List<CaptureDisk>();
            foreach (var (diskRequest, disk) in disks)
            {
                var jobDisk = job.FindDisk(disk.Target) ?? throw new CaptureFailedException(uuid, $"libvirt's job XML of capture '{captureId}' lacks disk '{disk.Target}'.", disk.Target);
                var context = jobDisk.ChangedBlocksContext;
                var reason = diskRequest.SinceCheckpoint is null ? FullReadReason.NotRequested : fullReasons.GetValueOrDefault(disk.Target);
                if (reason is not null && reason.Code != FullReadCode.NotRequested)
                {
                    LogDiskFull(captureId, uuid, disk.Target, reason.Message);
                }

                captureDisks.Add(new CaptureDisk
                {
                    Target = disk.Target,
                    Endpoint = endpointFor(jobDisk.ExportName ?? disk.Target),
                    VirtualSize = sizes[disk.Target],
                    Identity = DiskIdentity(disk),
                    SinceCheckpoint = context is null ? null : diskRequest.SinceCheckpoint,
                    ChangedBlocksContext = context,
                    Granularity = context is null ? null : granularities.GetValueOrDefault(diskRequest.SinceCheckpoint!, 65536),
                    FullReason = context is null ? reason ?? FullReadReason.NotRequested : null,
                    InNewCheckpoint = request.NewCheckpoint is not null && disk.SupportsCheckpoints,
                });
            }

            _captures[captureId] = new CaptureRecord(uuid, request.NewCheckpoint, [.. disks.Select(d => d.Disk.Target)], capturedAt, server.Socket, [.. job.Disks.Select(d => d.ScratchFile).OfType<string>()]) { Port = server.Port };
            LogCaptureStarted(captureId, uuid, string.Join(',', disks.Select(d => d.Disk.Target)), request.NewCheckpoint);
            return new Capture
            {
                Id = captureId,
                DomainId = uuid,
                HostName = HostName,
                CapturedAt = capturedAt,
                NewCheckpoint = request.NewCheckpoint,
                Disks = captureDisks,
            };
        }
        catch
        {
            ReleaseCore(domain, uuid, captureId, CaptureOutcome.Abandoned, request.NewCheckpoint);
            throw;
        }
    }

    private void RestartPaused(DomainSafeHandle domain, string uuid)
    {
        _events.Suppress(uuid, DomainEventKind.Started);
        _events.Suppress(uuid, DomainEventKind.Paused);
        LibvirtConnection.Start(domain, paused: true);
    }

    private static bool IsBaseUnusable(LibvirtErrorInfo error) =>
        error.Code == LibvirtErrorCodes.CheckpointInconsistent
        || error.Message.Contains("missing or broken bitmap", StringComparison.OrdinalIgnoreCase)
        || error.Message.Contains("inconsistent", StringComparison.OrdinalIgnoreCase);

    private FullReadReason? BaseProblem(string uuid, LibvirtDisk disk, string since, Dictionary<string, CheckpointDocument> checkpoints, DiskHealth health)
    {
        if (!disk.SupportsCheckpoints)
        {
            return new FullReadReason(FullReadCode.CheckpointsUnsupported, $"Disk '{disk.Target}' is {disk.Format}: it cannot carry checkpoints.");
        }

        if (!checkpoints.TryGetValue(since, out var checkpoint))
        {
            var orphan = health.Bitmaps.Any(b => b.Bitmap == since);
            return new FullReadReason(FullReadCode.CheckpointMissing, orphan
                ? $"libvirt has no checkpoint '{since}' on domain '{uuid}' although disk '{disk.Target}' still has its bitmap (metadata lost: redefine it from the saved XML)."
                : $"Checkpoint '{since}' does not exist on domain '{uuid}'.");
        }

        if (checkpoint.Disks.FirstOrDefault(d => d.Target == disk.Target)?.Bitmap is null)
        {
            return new FullReadReason(FullReadCode.BitmapMissing, $"Checkpoint '{since}' does not cover disk '{disk.Target}'.");
        }

        if (health.CanServeAsBase(since, out var reason))
        {
            return null;
        }

        return reason!.Code == FullReadCode.BitmapMissing
            ? reason with { Message = $"libvirt has checkpoint '{since}' but disk '{disk.Target}' has no bitmap for it (image replaced, converted or restored)." }
            : reason;
    }

    private (BackupServer Server, Func<string, NbdUri> EndpointFor) CreateServer(string uuid, string captureId)
    {
        if (_options.ExportTransport == LibvirtExportTransport.Unix)
        {
            var socket = Path.Combine(_options.SocketDirectory, captureId + ".sock");
            return (BackupServer.Unix(socket), name => NbdUri.ForUnixSocket(socket, name));
        }

        var used = _captures.Values.Select(c => c.Port).OfType<int>().ToHashSet();
        var port = Enumerable.Range(_options.TcpPortStart, _options.TcpPortCount).FirstOrDefault(p => !used.Contains(p));
        if (port == 0)
        {
            throw new CaptureFailedException(uuid, $"All {_options.TcpPortCount} TCP ports from {_options.TcpPortStart} on host '{HostName}' are in use by captures.");
        }

        var host = _options.TcpHost;
        return (BackupServer.Tcp(host, port, _options.TcpTls), name =>
        {
            var uri = NbdUri.ForTcp(host, port, name);
            return _options.TcpTls ? uri.WithTls(_options.TlsClientCertificatesDirectory) : uri;
        });
    }

    private void EnsureNotBusy(DomainSafeHandle domain, string uuid)
    {
        // Checked before backup-begin: libvirt would otherwise wait 30 s for the domain's job lock before refusing.
        if (LibvirtConnection.BackupGetXmlDesc(domain) is { } xml)
        {
            throw new DomainBusyException(uuid, CaptureIdOf(BackupXml.Parse(xml)), "A backup job is running on the domain.");
        }

        var stats = LibvirtConnection.GetJobStats(domain, 0);
        if (stats.Type is not (LibvirtJobStats.None or LibvirtJobStats.Completed or LibvirtJobStats.Failed or LibvirtJobStats.Cancelled))
        {
            throw new DomainBusyException(uuid, null, string.Create(CultureInfo.InvariantCulture, $"A libvirt job (type {stats.Type}, operation {stats.Operation}) is running on the domain."));
        }
    }

    private async Task<bool> ReleaseCoreAsync(string domainId, string captureId, CaptureOutcome outcome, CancellationToken cancellationToken)
    {
        // A capture broken by a lost connection (F20) is released as abandoned whatever the caller asked.
        var broken = _brokenCaptures.TryGetValue(captureId, out var problem);
        var effective = broken ? CaptureOutcome.Abandoned : outcome;
        var released = await RunAsync("release a capture", LibvirtOperationKind.General, domainId, () =>
        {
            using var domain = _connection.LookupDomain(domainId);
            if (domain is null)
            {
                // The domain is gone (undefined): only local files can be cleaned.
                if (!_captures.TryRemove(captureId, out var orphan))
                {
                    return false;
                }

                DeleteFiles(captureId, domainId, orphan.ScratchFiles, orphan.Socket);
                return true;
            }

            var uuid = LibvirtConnection.GetUuid(domain);
            _captures.TryGetValue(captureId, out var record);
            return ReleaseCore(domain, uuid, captureId, effective, record?.NewCheckpoint);
        }, cancellationToken, repeatable: true);
        _brokenCaptures.TryRemove(captureId, out _);
        if (released)
        {
            LogCaptureReleased(captureId, domainId, effective);
        }

        return broken && outcome == CaptureOutcome.Committed
            ? throw new CaptureFailedException(domainId, $"Capture '{captureId}' of domain '{domainId}' (host '{HostName}') cannot be committed: the connection to libvirtd was lost during it and {problem}. It was released as abandoned (its checkpoint removed); back the domain up again.")
            : released;
    }

    private bool ReleaseCore(DomainSafeHandle domain, string uuid, string captureId, CaptureOutcome outcome, string? newCheckpoint)
    {
        var found = _captures.TryRemove(captureId, out var record);
        var scratch = new List<string>(record?.ScratchFiles ?? []);
        var socket = record?.Socket;
        string? jobXml = null;
        try
        {
            jobXml = LibvirtConnection.BackupGetXmlDesc(domain);
        }
        catch (LibvirtNativeException ex) when (_connection.IsAlive())
        {
            LogCleanupFailed(captureId, uuid, "reading the backup job", ex.Error.Message);
        }

        if (jobXml is not null && BackupXml.Parse(jobXml) is var job && CaptureIdOf(job) == captureId)
        {
            found = true;
            scratch.AddRange(job.Disks.Select(d => d.ScratchFile).OfType<string>());
            socket ??= job.Server?.Socket;
            try
            {
                // "Operation canceled" with success is the normal end of a pull job.
                LibvirtConnection.AbortJob(domain);
            }
            catch (LibvirtNativeException ex) when (ex.Error.Code is LibvirtErrorCodes.OperationInvalid or LibvirtErrorCodes.NoDomainBackup)
            {
                // It ended meanwhile.
            }

            WaitForJobEnd(domain, uuid, captureId);
        }

        // A capture this instance started knows its checkpoint; one left by another process is found by its tag.
        if (record is null)
        {
            newCheckpoint ??= FindCaptureCheckpoint(domain, captureId);
        }

        found |= newCheckpoint is not null && outcome == CaptureOutcome.Abandoned;
        if (!found)
        {
            DeleteFiles(captureId, uuid, LeftoverScratch(captureId), null);
            return false;
        }

        scratch.AddRange(LeftoverScratch(captureId));
        DeleteFiles(captureId, uuid, scratch, socket);
        if (outcome == CaptureOutcome.Abandoned && newCheckpoint is not null)
        {
            try
            {
                DeleteCheckpointCore(domain, uuid, newCheckpoint, CheckpointDeleteMode.All, mustExist: false);
            }
            catch (Exception ex) when (ex is LibvirtNativeException or HypervisorException or InvalidOperationException)
            {
                LogCleanupFailed(captureId, uuid, $"deleting checkpoint '{newCheckpoint}'", ex.Message);
                throw;
            }
        }

        return true;
    }

    /// <summary>
    /// Waits until libvirt has torn the backup job down: abort only asks QEMU to cancel the block jobs, and libvirt ends
    /// the backup job (and deletes the scratch files it created) when QEMU reports them cancelled.
    /// </summary>
    private void WaitForJobEnd(DomainSafeHandle domain, string uuid, string captureId)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (LibvirtConnection.BackupGetXmlDesc(domain) is not null)
        {
            if (waited.Elapsed > JobEndTimeout)
            {
                throw new HypervisorException($"The backup job of capture '{captureId}' on domain '{uuid}' (host '{HostName}') did not end {JobEndTimeout.TotalSeconds} s after it was aborted.", uuid);
            }

            Thread.Sleep(10);
        }
    }

    private IEnumerable<string> LeftoverScratch(string captureId) =>
        Directory.Exists(_options.ScratchDirectory) ? Directory.EnumerateFiles(_options.ScratchDirectory, captureId + ".*") : [];

    private void DeleteFiles(string captureId, string uuid, IEnumerable<string> scratch, string? socket)
    {
        foreach (var file in scratch.Append(socket).OfType<string>().Distinct(StringComparer.Ordinal))
        {
            try
            {
                File.Delete(file);
            }
            catch (IOException ex)
            {
                LogCleanupFailed(captureId, uuid, $"deleting {file}", ex.Message);
            }
            catch (UnauthorizedAccessException ex)
            {
                LogCleanupFailed(captureId, uuid, $"deleting {file}", ex.Message);
            }
        }
    }

    private static string? FindCaptureCheckpoint(DomainSafeHandle domain, string captureId)
    {
        foreach (var (name, xml) in LibvirtConnection.ListCheckpoints(domain))
        {
            if (DrydockNames.IsOwned(name) && CheckpointXml.Parse(xml).Description?.Trim() == CaptureDescriptionPrefix + captureId)
            {
                return name;
            }
        }

        return null;
    }

    private void DeleteCheckpointCore(DomainSafeHandle domain, string uuid, string checkpoint, CheckpointDeleteMode mode, bool mustExist)
    {
        using var handle = LibvirtConnection.LookupCheckpoint(domain, checkpoint);
        if (handle is null)
        {
            // No metadata. QEMU may still hold bitmaps of that name (F02, F05): remove them when we delete it all.
            var removed = mode == CheckpointDeleteMode.All && RemoveOrphanBitmaps(domain, uuid, checkpoint);
            if (!removed && mustExist)
            {
                throw new CheckpointNotFoundException(uuid, checkpoint);
            }

            return;
        }

        var document = CheckpointXml.Parse(LibvirtConnection.GetCheckpointXml(handle, NativeMethods.CheckpointXmlNoDomain));
        try
        {
            LibvirtConnection.DeleteCheckpoint(handle, mode == CheckpointDeleteMode.MetadataOnly ? NativeMethods.CheckpointDeleteMetadataOnly : 0);
            LogCheckpoint(checkpoint, uuid, mode == CheckpointDeleteMode.MetadataOnly ? "metadata deleted" : "deleted");
        }
        catch (LibvirtNativeException ex) when (mode == CheckpointDeleteMode.All && MapState(LibvirtConnection.GetState(domain)) is DomainState.ShutOff or DomainState.Crashed)
        {
            // libvirt 9.0 cannot delete the bitmaps of a shut-off domain: drop the metadata, then remove the bitmaps
            // from the local images with qemu-img.
            LibvirtConnection.DeleteCheckpoint(handle, NativeMethods.CheckpointDeleteMetadataOnly);
            var domainXml = DomainXml.Parse(LibvirtConnection.GetXmlDesc(domain, NativeMethods.DomainXmlInactive));
            foreach (var disk in document.BitmapDisks)
            {
                if (domainXml.FindDisk(disk.Target) is { Type: "file", Source: { } image } && File.Exists(image)
                    && _tools.GetBitmaps(image).Any(b => b.Name == disk.Bitmap))
                {
                    _tools.RemoveBitmap(image, disk.Bitmap);
                }
            }

            LogCheckpoint(checkpoint, uuid, $"deleted offline (libvirt said: {ex.Error.Message})");
        }
    }

    private bool RemoveOrphanBitmaps(DomainSafeHandle domain, string uuid, string bitmap)
    {
        var state = MapState(LibvirtConnection.GetState(domain));
        var removed = false;
        if (state is DomainState.Running or DomainState.Paused)
        {
            if (ReadNodeBitmaps(domain, uuid) is not { } nodes)
            {
                return false;
            }

            foreach (var (node, bitmaps) in nodes)
            {
                if (bitmaps.Any(b => b.Name == bitmap))
                {
                    var reply = LibvirtConnection.QemuMonitorCommand(domain, $$$"""{"execute":"block-dirty-bitmap-remove","arguments":{"node":"{{{node}}}","name":"{{{bitmap}}}"}}""");
                    if (reply.Contains("\"error\"", StringComparison.Ordinal))
                    {
                        throw new HypervisorException($"Could not remove bitmap '{bitmap}' from node '{node}' of domain '{uuid}'.", uuid, reply);
                    }

                    removed = true;
                }
            }
        }
        else
        {
            foreach (var disk in DomainXml.Parse(LibvirtConnection.GetXmlDesc(domain, NativeMethods.DomainXmlInactive)).Disks)
            {
                if (disk is { Type: "file", Source: { } image, SupportsCheckpoints: true } && File.Exists(image) && _tools.GetBitmaps(image).Any(b => b.Name == bitmap))
                {
                    _tools.RemoveBitmap(image, bitmap);
                    removed = true;
                }
            }
        }

        if (removed)
        {
            LogCheckpoint(bitmap, uuid, "bitmaps without metadata removed");
        }

        return removed;
    }

    private IReadOnlyList<DiskHealth> ComputeHealth(DomainSafeHandle domain)
    {
        var state = MapState(LibvirtConnection.GetState(domain));
        var domainXml = DomainXml.Parse(LibvirtConnection.GetXmlDesc(domain, state is DomainState.Running or DomainState.Paused ? 0 : NativeMethods.DomainXmlInactive));
        return ComputeHealth(domain, domainXml, state);
    }

    private IReadOnlyList<DiskHealth> ComputeHealth(DomainSafeHandle domain, DomainXml domainXml, DomainState state)
    {
        var uuid = LibvirtConnection.GetUuid(domain);
        var checkpoints = LibvirtConnection.ListCheckpoints(domain).Select(c => CheckpointXml.Parse(c.Xml)).ToList();
        var live = state is DomainState.Running or DomainState.Paused;
        var nodes = live ? ReadNodeBitmaps(domain, uuid) : null;
        var result = new List<DiskHealth>();
        foreach (var disk in domainXml.Disks)
        {
            IReadOnlyList<QemuBitmap>? actual = null;
            string? unknownReason = null;
            if (live)
            {
                if (nodes is not null && disk.FormatNodeName is { } node && nodes.TryGetValue(node, out var list))
                {
                    actual = list;
                }
                else
                {
                    unknownReason = "the QEMU monitor did not report this disk's bitmaps";
                }
            }
            else if (disk is { Type: "file", Source: { } image, SupportsCheckpoints: true } && File.Exists(image))
            {
                try
                {
                    actual = _tools.GetBitmaps(image);
                }
                catch (InvalidOperationException ex)
                {
                    unknownReason = ex.Message;
                }
            }
            else
            {
                unknownReason = disk.SupportsCheckpoints ? "the domain is not running and its image is not a local file" : null;
            }

            var bitmaps = new List<BitmapHealth>();
            foreach (var checkpoint in checkpoints)
            {
                if (checkpoint.Disks.FirstOrDefault(d => d.Target == disk.Target)?.Bitmap is not { } bitmapName)
                {
                    continue;
                }

                if (actual is null)
                {
                    // State unknown: libvirt still checks the bitmap when a capture begins, and the driver then falls back.
                    bitmaps.Add(new BitmapHealth
                    {
                        Checkpoint = checkpoint.Name,
                        Bitmap = bitmapName,
                        Persistent = true,
                        Usable = true,
                        Problem = $"state unknown ({unknownReason}); libvirt checks it when the capture begins",
                    });
                }
                else if (actual.FirstOrDefault(b => b.Name == bitmapName) is { } found)
                {
                    bitmaps.Add(ToHealth(checkpoint.Name, found, hasMetadata: true));
                }

                // Known to be missing (image replaced, converted or restored; F06): no entry, so the disk cannot serve.
            }

            foreach (var extra in actual?.Where(b => !bitmaps.Any(h => h.Bitmap == b.Name)) ?? [])
            {
                bitmaps.Add(ToHealth(extra.Name, extra, hasMetadata: false));
            }

            result.Add(new DiskHealth
            {
                Target = disk.Target,
                Identity = DiskIdentity(disk),
                VirtualSize = LibvirtConnection.GetBlockInfo(domain, disk.Target).Capacity,
                SupportsCheckpoints = disk.SupportsCheckpoints,
                Bitmaps = bitmaps,
            });
        }

        return result;
    }

    private static BitmapHealth ToHealth(string checkpoint, QemuBitmap bitmap, bool hasMetadata) => new()
    {
        Checkpoint = checkpoint,
        Bitmap = bitmap.Name,
        Recording = bitmap.Recording,
        Busy = bitmap.Busy,
        Inconsistent = bitmap.Inconsistent,
        Persistent = bitmap.Persistent,
        Granularity = bitmap.Granularity,
        DirtyBytes = bitmap.Count,
        Usable = hasMetadata && !bitmap.Inconsistent && bitmap.Persistent,
        Problem = bitmap.Inconsistent
            ? "QEMU reports the bitmap inconsistent (the image was not closed cleanly): it can only be removed"
            : !bitmap.Persistent
                ? "the bitmap is not persistent"
                : !hasMetadata ? "libvirt has no checkpoint metadata for this bitmap" : null,
    };

    private IReadOnlyDictionary<string, IReadOnlyList<QemuBitmap>>? ReadNodeBitmaps(DomainSafeHandle domain, string uuid)
    {
        if (!_options.UseQemuMonitorForBitmaps)
        {
            return null;
        }

        var state = MapState(LibvirtConnection.GetState(domain));
        if (state is not (DomainState.Running or DomainState.Paused))
        {
            return null;
        }

        try
        {
            return QemuBitmaps.ParseNamedBlockNodes(LibvirtConnection.QemuMonitorCommand(domain, """{"execute":"query-named-block-nodes","arguments":{"flat":true}}"""));
        }
        catch (Exception ex) when (ex is LibvirtNativeException or FormatException or DllNotFoundException or EntryPointNotFoundException)
        {
            LogBitmapsUnavailable(uuid, ex.Message);
            return null;
        }
    }

    private void AddCaptures(DomainSafeHandle domain, List<CaptureSummary> result)
    {
        if (LibvirtConnection.BackupGetXmlDesc(domain) is not { } xml)
        {
            return;
        }

        var job = BackupXml.Parse(xml);
        if (CaptureIdOf(job) is not { } id || job.Mode != "pull")
        {
            return;
        }

        var mine = _captures.TryGetValue(id, out var record);
        result.Add(new CaptureSummary
        {
            Id = id,
            DomainId = LibvirtConnection.GetUuid(domain),
            Targets = [.. job.Disks.Where(d => d.Backup).Select(d => d.Name)],
            NewCheckpoint = record?.NewCheckpoint ?? FindCaptureCheckpoint(domain, id),
            CapturedAt = record?.CapturedAt,
            StartedByThisDriver = mine,
        });
    }

    private DomainInfo Describe(DomainSafeHandle domain)
    {
        var state = MapState(LibvirtConnection.GetState(domain));
        var xml = DomainXml.Parse(LibvirtConnection.GetXmlDesc(domain));
        return new DomainInfo
        {
            Id = xml.Uuid,
            Name = xml.Name,
            HostName = HostName,
            State = state,
            Persistent = LibvirtConnection.IsPersistent(domain),
            Disks = [.. xml.Disks.Select(d => new DiskInfo
            {
                Target = d.Target,
                Source = d.Source,
                Format = d.Format,
                VirtualSize = LibvirtConnection.GetBlockInfo(domain, d.Target).Capacity,
                Identity = DiskIdentity(d),
                SupportsCheckpoints = d.SupportsCheckpoints,
                CheckpointsUnsupportedReason = d.SupportsCheckpoints ? null : $"{d.Format} images cannot carry persistent dirty bitmaps",
                ReadOnly = d.ReadOnly,
            })],
        };
    }

    private DomainSafeHandle OpenDomain(string domainId) =>
        _connection.LookupDomain(domainId) ?? throw new DomainNotFoundException(domainId, HostName);

    private async Task<LibvirtJobCompletion> WaitForPushAsync(string uuid, Task<LibvirtJobCompletion> completion, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.PushTimeout);
        while (true)
        {
            // The event is the signal; polling the completed job's statistics covers an event lost with a reconnect.
            var poll = Task.Delay(TimeSpan.FromSeconds(2), _timeProvider, timeout.Token);
            if (await Task.WhenAny(completion, poll) == completion)
            {
                return await completion;
            }

            await poll;
            var finished = await RunAsync("read the push backup's state", LibvirtOperationKind.General, uuid, () =>
            {
                using var domain = OpenDomain(uuid);
                if (LibvirtConnection.BackupGetXmlDesc(domain) is not null)
                {
                    return null;
                }

                var stats = LibvirtConnection.GetJobStats(domain, NativeMethods.JobStatsCompleted);
                var parameters = new Dictionary<string, object>(stats.Parameters, StringComparer.Ordinal) { ["success"] = stats.Type == LibvirtJobStats.Completed };
                return new LibvirtJobCompletion(uuid, parameters);
            }, timeout.Token, repeatable: true);
            if (finished is not null)
            {
                return finished;
            }
        }
    }

    private async Task CleanUpFailedPushAsync(string uuid, PushBackupRequest request, IReadOnlyDictionary<string, string> files)
    {
        foreach (var file in files.Values)
        {
            File.Delete(file);
        }

        if (request.NewCheckpoint is { } checkpoint)
        {
            await RunAsync("delete the failed push backup's checkpoint", LibvirtOperationKind.Checkpoint, uuid, () =>
            {
                using var domain = OpenDomain(uuid);
                DeleteCheckpointCore(domain, uuid, checkpoint, CheckpointDeleteMode.All, mustExist: false);
                return true;
            }, CancellationToken.None, checkpoint);
        }
    }

    /// <summary>
    /// Runs <paramref name="body"/> on a worker thread and maps libvirt's errors. When it fails because the connection
    /// was closed, it waits for a new one; a <paramref name="repeatable"/> body (one that only reads, or is idempotent)
    /// then runs again, any other fails with <see cref="HypervisorConnectionException"/>.
    /// </summary>
    private Task<T> RunAsync<T>(string operation, LibvirtOperationKind kind, string? domainId, Func<T> body, CancellationToken cancellationToken, string? checkpoint = null, bool repeatable = false)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) == 1, this);
        return _worker.RunAsync(() =>
        {
            // At most two attempts: the second only after the first found the connection closed and a new one opened.
            for (var attempt = 1; ; attempt++)
            {
                var connection = _connection;
                try
                {
                    return body();
                }
                catch (LibvirtNativeException ex) when (attempt == 1 && !connection.IsAlive())
                {
                    AwaitReconnection(connection, operation, domainId, ex.Error, cancellationToken);
                    if (!repeatable)
                    {
                        throw new HypervisorConnectionException(
                            $"The connection to libvirt on host '{HostName}' was lost while trying to {operation} ({ex.Error.Message}). It has been re-established, but the operation was not repeated: it may have taken effect.",
                            domainId,
                            ex);
                    }

                    LogRepeating(operation, domainId);
                }
                catch (LibvirtNativeException ex)
                {
                    throw LibvirtErrorMapper.Map(ex.Error, kind, operation, HostName, domainId, checkpoint);
                }
                catch (FormatException ex)
                {
                    throw new HypervisorException($"libvirt returned XML the driver cannot read while trying to {operation} (domain '{domainId}', host '{HostName}'): {ex.Message}", domainId, innerException: ex);
                }
            }
        }, cancellationToken);
    }

    /// <summary>Opens a connection with the configured keep-alive.</summary>
    private static LibvirtConnection Open(LibvirtDriverOptions options)
    {
        var opened = LibvirtConnection.Open(options.Uri);
        try
        {
            if (options.KeepAliveIntervalSeconds > 0)
            {
                opened.SetKeepAlive(options.KeepAliveIntervalSeconds, options.KeepAliveCount);
            }

            return opened;
        }
        catch
        {
            opened.Dispose();
            throw;
        }
    }

    /// <summary>libvirt closed the connection (event loop thread): reconnect in the background until it works.</summary>
    private void OnConnectionClosed(int reason)
    {
        if (Volatile.Read(ref _disposed) == 1 || Interlocked.Exchange(ref _reconnecting, 1) == 1)
        {
            return;
        }

        var closed = _connection;
        LogConnectionLost(_options.Uri, reason);
        _ = Task.Run(async () =>
        {
            try
            {
                var pause = TimeSpan.FromMilliseconds(250);
                while (Volatile.Read(ref _disposed) == 0 && !await _worker.RunAsync(() => TryReconnect(closed), CancellationToken.None))
                {
                    await Task.Delay(pause, _timeProvider);
                    pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, TimeSpan.FromSeconds(5).Ticks));
                }
            }
            catch (ObjectDisposedException)
            {
                // The driver was disposed meanwhile.
            }
            finally
            {
                Volatile.Write(ref _reconnecting, 0);
            }
        });
    }

    /// <summary>A call found the connection closed: wait (on this worker thread) until a new one is open.</summary>
    private void AwaitReconnection(LibvirtConnection closed, string operation, string? domainId, LibvirtErrorInfo error, CancellationToken cancellationToken)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        var pause = TimeSpan.FromMilliseconds(100);
        while (!TryReconnect(closed))
        {
            if (waited.Elapsed >= _options.ReconnectTimeout)
            {
                throw new HypervisorConnectionException(
                    string.Create(CultureInfo.InvariantCulture, $"The connection to libvirt ({_options.Uri}) on host '{HostName}' was lost while trying to {operation} ({error.Message}), and libvirtd did not answer again within {_options.ReconnectTimeout.TotalSeconds:F0} s."),
                    domainId);
            }

            cancellationToken.WaitHandle.WaitOne(pause);
            cancellationToken.ThrowIfCancellationRequested();
            pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, TimeSpan.FromSeconds(2).Ticks));
        }
    }

    /// <summary>
    /// Replaces <paramref name="closed"/> with a new connection, unless that was done already. True when a new connection
    /// is in place; false when libvirtd does not answer yet.
    /// </summary>
    private bool TryReconnect(LibvirtConnection closed)
    {
        lock (_connectionLock)
        {
            if (!ReferenceEquals(_connection, closed) || Volatile.Read(ref _disposed) == 1)
            {
                return true;
            }

            LibvirtConnection? opened = null;
            try
            {
                opened = Open(_options);
                _events.Reattach(opened);
            }
            catch (LibvirtNativeException ex)
            {
                opened?.Dispose();
                LogReconnectFailed(_options.Uri, ex.Error.Message);
                return false;
            }

            // Calls still running on the old handle must not find it freed: it is closed when the driver is disposed.
            _closedConnections.Add(closed);
            Volatile.Write(ref _connection, opened);
            LogReconnected(_options.Uri, _captures.Count);
            CheckCapturesAfterReconnect();
            return true;
        }
    }

    /// <summary>Why a capture cannot go on after a reconnect, or null when its backup job and NBD socket are still there.</summary>
    private string? CaptureProblem(string captureId, CaptureRecord record)
    {
        using var domain = _connection.LookupDomain(record.DomainId);
        if (domain is null)
        {
            return "the domain no longer exists";
        }

        if (LibvirtConnection.BackupGetXmlDesc(domain) is not { } xml || CaptureIdOf(BackupXml.Parse(xml)) != captureId)
        {
            return "its backup job is gone";
        }

        return record.Socket is { } socket && !File.Exists(socket) ? $"its NBD socket {socket} is gone" : null;
    }

    /// <summary>
    /// F20: after a reconnect, a capture goes on only when its backup job (by capture id) and its NBD socket are still
    /// there; any other is marked broken (it can no longer be committed) and published as
    /// <see cref="DomainEventKind.CaptureBroken"/>.
    /// </summary>
    private void CheckCapturesAfterReconnect()
    {
        foreach (var (captureId, record) in _captures)
        {
            string? problem;
            try
            {
                problem = CaptureProblem(captureId, record);
            }
            catch (Exception ex) when (ex is LibvirtNativeException or FormatException)
            {
                problem = $"its backup job could not be read ({ex.Message})";
            }

            if (problem is null)
            {
                LogCaptureSurvived(captureId, record.DomainId);
                continue;
            }

            _brokenCaptures[captureId] = problem;
            _events.Publish(new DomainEvent(record.DomainId, DomainEventKind.CaptureBroken, _timeProvider.GetUtcNow())
            {
                HostName = HostName,
                CaptureId = captureId,
                Detail = $"the connection to libvirtd was lost during the capture and {problem}",
            });
            LogCaptureLost(captureId, record.DomainId, problem);
        }
    }

    private sealed record CaptureRecord(string DomainId, string? NewCheckpoint, IReadOnlyList<string> Targets, DateTimeOffset CapturedAt, string? Socket, IReadOnlyList<string> ScratchFiles)
    {
        public int? Port { get; init; }
    }

    private sealed record RestoreRecord(string DomainId, List<RestoreExportProcess> Processes, bool RestartPaused);
}
