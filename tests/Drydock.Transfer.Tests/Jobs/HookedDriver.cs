using Drydock.Hypervisor;

namespace Drydock.Transfer.Tests.Jobs;

/// <summary>A driver that forwards everything and runs a hook just before a capture begins (a race between the plan
/// and the capture).</summary>
internal sealed class HookedDriver(IHypervisorDriver inner) : IHypervisorDriver
{
    public Func<CaptureRequest, Task>? BeforeCapture { get; set; }

    public string HostName => inner.HostName;

    public HypervisorCapabilities Capabilities => inner.Capabilities;

    public async Task<Capture> BeginCaptureAsync(CaptureRequest request, CancellationToken cancellationToken = default)
    {
        if (BeforeCapture is { } hook)
        {
            await hook(request);
        }

        return await inner.BeginCaptureAsync(request, cancellationToken);
    }

    public Task<IReadOnlyList<DomainInfo>> ListDomainsAsync(CancellationToken cancellationToken = default) => inner.ListDomainsAsync(cancellationToken);

    public Task<DomainInfo> GetDomainAsync(string domainId, CancellationToken cancellationToken = default) => inner.GetDomainAsync(domainId, cancellationToken);

    public Task<DomainDefinition> GetDefinitionAsync(string domainId, CancellationToken cancellationToken = default) => inner.GetDefinitionAsync(domainId, cancellationToken);

    public Task<IReadOnlyList<CaptureSummary>> ListCapturesAsync(string? domainId = null, CancellationToken cancellationToken = default) => inner.ListCapturesAsync(domainId, cancellationToken);

    public Task<bool> ReleaseCaptureAsync(string domainId, string captureId, CaptureOutcome outcome, CancellationToken cancellationToken = default) =>
        inner.ReleaseCaptureAsync(domainId, captureId, outcome, cancellationToken);

    public Task<IReadOnlyList<CheckpointInfo>> ListCheckpointsAsync(string domainId, CancellationToken cancellationToken = default) => inner.ListCheckpointsAsync(domainId, cancellationToken);

    public Task<string> GetCheckpointXmlAsync(string domainId, string checkpoint, CancellationToken cancellationToken = default) =>
        inner.GetCheckpointXmlAsync(domainId, checkpoint, cancellationToken);

    public Task<CheckpointInfo> CreateCheckpointAsync(string domainId, string checkpoint, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default) =>
        inner.CreateCheckpointAsync(domainId, checkpoint, targets, cancellationToken);

    public Task<CheckpointInfo> RedefineCheckpointAsync(string domainId, string checkpointXml, CancellationToken cancellationToken = default) =>
        inner.RedefineCheckpointAsync(domainId, checkpointXml, cancellationToken);

    public Task DeleteCheckpointAsync(string domainId, string checkpoint, CheckpointDeleteMode mode = CheckpointDeleteMode.All, CancellationToken cancellationToken = default) =>
        inner.DeleteCheckpointAsync(domainId, checkpoint, mode, cancellationToken);

    public Task<IReadOnlyList<DiskHealth>> GetDiskHealthAsync(string domainId, CancellationToken cancellationToken = default) => inner.GetDiskHealthAsync(domainId, cancellationToken);

    public Task<RestoreExport> OpenRestoreExportAsync(string domainId, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default) =>
        inner.OpenRestoreExportAsync(domainId, targets, cancellationToken);

    public Task<bool> CloseRestoreExportAsync(string domainId, string exportId, CancellationToken cancellationToken = default) =>
        inner.CloseRestoreExportAsync(domainId, exportId, cancellationToken);

    public Task StartAsync(string domainId, bool paused = false, CancellationToken cancellationToken = default) => inner.StartAsync(domainId, paused, cancellationToken);

    public Task ResumeAsync(string domainId, CancellationToken cancellationToken = default) => inner.ResumeAsync(domainId, cancellationToken);

    public Task DestroyAsync(string domainId, CancellationToken cancellationToken = default) => inner.DestroyAsync(domainId, cancellationToken);

    public IAsyncEnumerable<DomainEvent> WatchEventsAsync(CancellationToken cancellationToken = default) => inner.WatchEventsAsync(cancellationToken);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
