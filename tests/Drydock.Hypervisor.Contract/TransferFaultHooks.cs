using Drydock.Nbd;
using Drydock.Storage;
using Drydock.TestKit;
using Xunit;

namespace Drydock.Hypervisor.Contract;

/// <summary>
/// The harness's driver, as the jobs see it, with a hook after a capture begins (F21: the domain dies while it is read).
/// It always forwards to the harness's current driver (<see cref="ContractHarness.ReopenDriverAsync"/> replaces it) and
/// never disposes it: the harness owns it.
/// </summary>
public sealed class HookedDriver(ContractHarness harness) : IHypervisorDriver
{
    /// <summary>Runs once, after the next capture began and before the job gets it.</summary>
    public Func<Capture, CancellationToken, Task>? AfterBeginCapture { get; set; }

    /// <summary>
    /// Runs once, after the next capture began (and after <see cref="AfterBeginCapture"/>): the job gets the capture it
    /// returns, e.g. with every export behind an nbdkit proxy that injects faults (F23, F26).
    /// </summary>
    public Func<Capture, CancellationToken, Task<Capture>>? ReplaceCapture { get; set; }

    private IHypervisorDriver Inner => harness.Driver;

    public string HostName => Inner.HostName;

    public HypervisorCapabilities Capabilities => Inner.Capabilities;

    public Task<IReadOnlyList<DomainInfo>> ListDomainsAsync(CancellationToken cancellationToken = default) => Inner.ListDomainsAsync(cancellationToken);

    public Task<DomainInfo> GetDomainAsync(string domainId, CancellationToken cancellationToken = default) => Inner.GetDomainAsync(domainId, cancellationToken);

    public Task<DomainDefinition> GetDefinitionAsync(string domainId, CancellationToken cancellationToken = default) => Inner.GetDefinitionAsync(domainId, cancellationToken);

    public async Task<Capture> BeginCaptureAsync(CaptureRequest request, CancellationToken cancellationToken = default)
    {
        var capture = await Inner.BeginCaptureAsync(request, cancellationToken);
        if (AfterBeginCapture is { } hook)
        {
            AfterBeginCapture = null;
            await hook(capture, cancellationToken);
        }

        if (ReplaceCapture is { } replace)
        {
            ReplaceCapture = null;
            capture = await replace(capture, cancellationToken);
        }

        return capture;
    }

    public Task<IReadOnlyList<CaptureSummary>> ListCapturesAsync(string? domainId = null, CancellationToken cancellationToken = default) => Inner.ListCapturesAsync(domainId, cancellationToken);

    public Task<bool> ReleaseCaptureAsync(string domainId, string captureId, CaptureOutcome outcome, CancellationToken cancellationToken = default) =>
        Inner.ReleaseCaptureAsync(domainId, captureId, outcome, cancellationToken);

    public Task<IReadOnlyList<CheckpointInfo>> ListCheckpointsAsync(string domainId, CancellationToken cancellationToken = default) => Inner.ListCheckpointsAsync(domainId, cancellationToken);

    public Task<string> GetCheckpointXmlAsync(string domainId, string checkpoint, CancellationToken cancellationToken = default) =>
        Inner.GetCheckpointXmlAsync(domainId, checkpoint, cancellationToken);

    public Task<CheckpointInfo> CreateCheckpointAsync(string domainId, string checkpoint, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default) =>
        Inner.CreateCheckpointAsync(domainId, checkpoint, targets, cancellationToken);

    public Task<CheckpointInfo> RedefineCheckpointAsync(string domainId, string checkpointXml, CancellationToken cancellationToken = default) =>
        Inner.RedefineCheckpointAsync(domainId, checkpointXml, cancellationToken);

    public Task DeleteCheckpointAsync(string domainId, string checkpoint, CheckpointDeleteMode mode = CheckpointDeleteMode.All, CancellationToken cancellationToken = default) =>
        Inner.DeleteCheckpointAsync(domainId, checkpoint, mode, cancellationToken);

    public Task<IReadOnlyList<DiskHealth>> GetDiskHealthAsync(string domainId, CancellationToken cancellationToken = default) => Inner.GetDiskHealthAsync(domainId, cancellationToken);

    public Task<RestoreExport> OpenRestoreExportAsync(string domainId, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default) =>
        Inner.OpenRestoreExportAsync(domainId, targets, cancellationToken);

    public Task<bool> CloseRestoreExportAsync(string domainId, string exportId, CancellationToken cancellationToken = default) =>
        Inner.CloseRestoreExportAsync(domainId, exportId, cancellationToken);

    public Task StartAsync(string domainId, bool paused = false, CancellationToken cancellationToken = default) => Inner.StartAsync(domainId, paused, cancellationToken);

    public Task ResumeAsync(string domainId, CancellationToken cancellationToken = default) => Inner.ResumeAsync(domainId, cancellationToken);

    public Task DestroyAsync(string domainId, CancellationToken cancellationToken = default) => Inner.DestroyAsync(domainId, cancellationToken);

    public IAsyncEnumerable<DomainEvent> WatchEventsAsync(CancellationToken cancellationToken = default) => Inner.WatchEventsAsync(cancellationToken);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>A blob store that runs a hook before every put (F04: the upload fails; F28: the job is cancelled mid-upload).</summary>
public sealed class HookedBlobStore(IBlobStore inner) : IBlobStore
{
    /// <summary>Called before each put with the object's name; an exception it returns fails the put.</summary>
    public Func<string, Exception?>? BeforePut { get; set; }

    public string Location => inner.Location;

    public Task<BlobProperties> PutAsync(string name, ReadOnlyMemory<byte> content, BlobCondition condition, CancellationToken cancellationToken = default)
    {
        return BeforePut?.Invoke(name) is { } failure
            ? Task.FromException<BlobProperties>(failure)
            : inner.PutAsync(name, content, condition, cancellationToken);
    }

    public Task<BlobContent> GetAsync(string name, BlobRange range, long maxLength, CancellationToken cancellationToken = default) =>
        inner.GetAsync(name, range, maxLength, cancellationToken);

    public Task<BlobProperties?> GetPropertiesAsync(string name, CancellationToken cancellationToken = default) => inner.GetPropertiesAsync(name, cancellationToken);

    public Task<bool> DeleteAsync(string name, string? ifMatch = null, CancellationToken cancellationToken = default) => inner.DeleteAsync(name, ifMatch, cancellationToken);

    public Task<BlobListPage> ListPageAsync(string prefix, string? continuation, int maxResults, CancellationToken cancellationToken = default) =>
        inner.ListPageAsync(prefix, continuation, maxResults, cancellationToken);

    public Task FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);
}

/// <summary>Assertions on exceptions that may arrive wrapped.</summary>
public static class ExceptionChain
{
    /// <summary>Every message of <paramref name="exception"/> and its inner exceptions, one per line.</summary>
    public static string Messages(Exception exception)
    {
        var messages = new List<string>();
        for (var e = exception; e is not null; e = e.InnerException)
        {
            messages.Add($"{e.GetType().Name}: {e.Message}");
        }

        return string.Join('\n', messages);
    }

    /// <summary>Asserts that <paramref name="exception"/> or one of its inner exceptions is a <typeparamref name="T"/>.</summary>
    public static T AssertContains<T>(Exception exception)
        where T : Exception
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is T found)
            {
                return found;
            }
        }

        Assert.Fail($"Expected a {typeof(T).Name} in the exception chain, got:\n{Messages(exception)}");
        return null!;
    }
}

/// <summary>
/// nbdkit proxies (its nbd plugin) in front of a capture's exports, so that real NBD faults reach the backup pipeline
/// between it and the hypervisor's own server: the error filter (F26), or a reset of every connection while the
/// server stays reachable (F23). Only <c>base:allocation</c> passes through nbdkit, so the backups read in full.
/// </summary>
/// <param name="configure">Filters for each proxy.</param>
/// <param name="resettable">Whether <see cref="ResetAfterFirstReadAsync"/> will be used: each proxy then logs its requests
/// and has a standby started beside it.</param>
public sealed class NbdkitProxies(Func<NbdkitOptions, NbdkitOptions> configure, bool resettable = false) : IAsyncDisposable
{
    private readonly List<NbdkitServer> _servers = [];
    private readonly Dictionary<string, (NbdkitServer Serving, NbdkitServer? Standby, string? Log)> _byTarget = new(StringComparer.Ordinal);

    /// <summary>Starts a proxy (and, when resettable, its standby) per disk; returns the capture pointing at the proxies.</summary>
    public async Task<Capture> FrontAsync(Capture capture, CancellationToken cancellationToken)
    {
        var disks = new List<CaptureDisk>();
        foreach (var disk in capture.Disks)
        {
            var socket = disk.Endpoint.SocketPath is { } path && !disk.Endpoint.IsAbstractSocket
                ? path
                : throw new InvalidOperationException($"disk {disk.Target}: the export {disk.Endpoint} is not on a Unix socket path");
            var proxy = configure(NbdkitOptions.Nbd(socket, disk.ExportName)) with { ReadOnly = true };
            var log = resettable ? Path.Combine(Path.GetTempPath(), $"drydock-proxy-{Guid.NewGuid():N}.log") : null;
            var serving = await StartAsync(log is null ? proxy : proxy.WithFilter("log", "logfile=" + log), cancellationToken);
            var standby = resettable ? await StartAsync(proxy, cancellationToken) : null;
            _byTarget[disk.Target] = (serving, standby, log);
            disks.Add(disk with { Endpoint = NbdUri.ForUnixSocket(serving.SocketPath!, disk.ExportName) });
        }

        return capture with { Disks = disks };
    }

    /// <summary>
    /// Once the proxy of <paramref name="target"/> has logged its first read, resets every connection to it while the
    /// socket stays served: the standby's socket is renamed over the proxy's path (new connections reach the standby),
    /// then the proxy is killed with SIGKILL (its connections break mid-request).
    /// </summary>
    public async Task ResetAfterFirstReadAsync(string target, CancellationToken cancellationToken)
    {
        if (_byTarget[target] is not (var serving, { } standby, { } log))
        {
            throw new InvalidOperationException("these proxies were not made resettable");
        }

        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!File.Exists(log) || !(await File.ReadAllTextAsync(log, cancellationToken)).Contains("Read ", StringComparison.Ordinal))
        {
            Assert.True(waited.Elapsed < TimeSpan.FromSeconds(60), $"the proxy of {target} served no read within 60 s");
            await Task.Delay(5, cancellationToken);
        }

        File.Move(standby.SocketPath!, serving.SocketPath!, overwrite: true);
        using var process = System.Diagnostics.Process.GetProcessById(serving.Process.Id);
        process.Kill();
        await serving.Process.WaitForExitAsync(cancellationToken);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        foreach (var server in _servers)
        {
            await server.DisposeAsync();
        }

        foreach (var (_, _, log) in _byTarget.Values)
        {
            if (log is not null)
            {
                File.Delete(log);
            }
        }
    }

    private async Task<NbdkitServer> StartAsync(NbdkitOptions options, CancellationToken cancellationToken)
    {
        var server = await NbdkitServer.StartAsync(options, cancellationToken);
        _servers.Add(server);
        return server;
    }
}
