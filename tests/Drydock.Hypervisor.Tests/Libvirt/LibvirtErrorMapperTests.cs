using Drydock.Hypervisor.Libvirt;
using Drydock.Hypervisor.Libvirt.Interop;
using Xunit;

namespace Drydock.Hypervisor.Tests.Libvirt;

public sealed class LibvirtErrorMapperTests
{
    private const string Domain = "6f1d2c1e-93b5-4c55-a0a4-5d1f3c0c9e11";

    [Fact]
    public void Job_lock_timeout_is_busy_with_libvirts_message()
    {
        // libvirt 9.0's answer to a second backup-begin, after waiting 30 s for the job lock.
        var error = new LibvirtErrorInfo(68, 10, "Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatchDomainBackupBegin)");

        var mapped = Assert.IsType<DomainBusyException>(LibvirtErrorMapper.Map(error, LibvirtOperationKind.Capture, "begin a capture", "host-1", Domain));

        Assert.Equal(Domain, mapped.DomainId);
        Assert.Equal(error.Message, mapped.HypervisorMessage);
        Assert.Contains(error.Message, mapped.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(42, "Domain not found: no domain with matching name 'x'", typeof(DomainNotFoundException))]
    [InlineData(103, "Domain checkpoint not found: no domain checkpoint with matching name 'drydock-a'", typeof(CheckpointNotFoundException))]
    [InlineData(109, "checkpoint inconsistent: missing or broken bitmap 'drydock-a' for disk 'vda'", typeof(CheckpointInconsistentException))]
    [InlineData(55, "operation failed: bitmap 'drydock-a' already exists", typeof(CheckpointExistsException))]
    [InlineData(55, "Requested operation is not valid: domain is not running", typeof(DomainStateException))]
    [InlineData(84, "Operation not supported: cannot delete checkpoint for inactive domain", typeof(HypervisorNotSupportedException))]
    [InlineData(1, "internal error: unable to execute QEMU command 'blockdev-add'", typeof(CaptureFailedException))]
    [InlineData(38, "End of file while reading data: Input/output error", typeof(CaptureFailedException))]
    public void Maps_libvirt_codes_and_messages_to_typed_errors(int code, string message, Type expected)
    {
        var mapped = LibvirtErrorMapper.Map(new LibvirtErrorInfo(code, 10, message), LibvirtOperationKind.Capture, "begin a capture", "host-1", Domain, "drydock-a");

        Assert.IsType(expected, mapped);
        Assert.Equal(message, mapped.HypervisorMessage);
        if (mapped is CheckpointException checkpoint)
        {
            Assert.Equal("drydock-a", checkpoint.Checkpoint);
        }
    }

    [Fact]
    public void Connection_failures_name_the_host()
    {
        var mapped = LibvirtErrorMapper.Map(new LibvirtErrorInfo(38, 7, "Failed to connect socket to '/run/libvirt/libvirt-sock': No such file or directory"), LibvirtOperationKind.Connect, "connect to qemu:///system", "host-1");

        var connection = Assert.IsType<HypervisorConnectionException>(mapped);
        Assert.Contains("host-1", connection.Message, StringComparison.Ordinal);
        Assert.Contains("libvirt-sock", connection.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Other_operations_keep_the_code_name()
    {
        var mapped = LibvirtErrorMapper.Map(new LibvirtErrorInfo(9, 10, "operation failed: x"), LibvirtOperationKind.General, "list domains", "host-1", Domain);

        Assert.Equal("VIR_ERR_OPERATION_FAILED", mapped.HypervisorCode);
        Assert.IsType<HypervisorException>(mapped);
    }
}
