using Microsoft.Extensions.Logging;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>Opens <see cref="LibvirtDriver"/>s for <c>libvirt:URI</c> addresses, e.g. <c>libvirt:qemu:///system</c>.</summary>
/// <param name="template">Options every connection starts from; the address replaces <see cref="LibvirtDriverOptions.Uri"/>.</param>
/// <param name="timeProvider">The clock.</param>
/// <param name="loggerFactory">Loggers, or null.</param>
public sealed class LibvirtConnector(LibvirtDriverOptions template, TimeProvider? timeProvider = null, ILoggerFactory? loggerFactory = null) : IHypervisorConnector
{
    /// <inheritdoc/>
    public string Scheme => LibvirtDriver.DriverName;

    /// <inheritdoc/>
    public async Task<IHypervisorDriver> ConnectAsync(string address, CancellationToken cancellationToken = default)
    {
        var options = new LibvirtDriverOptions
        {
            Uri = string.IsNullOrEmpty(address) ? template.Uri : address,
            HostName = template.HostName,
            SocketDirectory = template.SocketDirectory,
            ScratchDirectory = template.ScratchDirectory,
            QemuUser = template.QemuUser,
            ExportTransport = template.ExportTransport,
            TcpHost = template.TcpHost,
            TcpPortStart = template.TcpPortStart,
            TcpPortCount = template.TcpPortCount,
            TcpTls = template.TcpTls,
            TlsClientCertificatesDirectory = template.TlsClientCertificatesDirectory,
            WorkerThreads = template.WorkerThreads,
            KeepAliveIntervalSeconds = template.KeepAliveIntervalSeconds,
            KeepAliveCount = template.KeepAliveCount,
            ReconnectTimeout = template.ReconnectTimeout,
            UseQemuMonitorForBitmaps = template.UseQemuMonitorForBitmaps,
            QemuImgPath = template.QemuImgPath,
            QemuNbdPath = template.QemuNbdPath,
            PushTimeout = template.PushTimeout,
            RestoreExportStartTimeout = template.RestoreExportStartTimeout,
        };
        return await LibvirtDriver.ConnectAsync(options, timeProvider, loggerFactory?.CreateLogger<LibvirtDriver>(), cancellationToken);
    }
}
