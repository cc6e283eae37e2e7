//! The heap (a static arena handed to `linked_list_allocator`) and the
//! virtio-drivers [`Hal`]: guest memory is identity mapped, so DMA buffers are
//! plain page-aligned heap allocations whose virtual address is their
//! physical address.

use core::ptr::NonNull;

use linked_list_allocator::LockedHeap;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// 256 receive buffers per network device, 128 KiB send buffers on the HTTP
/// listeners of up to four interfaces, the bulk client's 128 KiB window.
const HEAP_SIZE: usize = 16 << 20;

#[repr(C, align(4096))]
struct Arena([u8; HEAP_SIZE]);

static mut ARENA: Arena = Arena([0; HEAP_SIZE]);

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Hands the arena to the allocator. Call once, before any allocation.
pub fn init() {
    // SAFETY: called once at start-up; the arena is used by nothing else.
    unsafe {
        let start = (&raw mut ARENA).cast::<u8>();
        ALLOCATOR.lock().init(start, HEAP_SIZE);
    }
}

/// DMA through identity-mapped heap pages.
#[derive(Debug)]
pub struct HelloHal;

fn dma_layout(pages: usize) -> core::alloc::Layout {
    match core::alloc::Layout::from_size_align(pages.max(1) * PAGE_SIZE, PAGE_SIZE) {
        Ok(layout) => layout,
        Err(_) => panic!("DMA layout of {pages} pages"),
    }
}

// SAFETY: allocations are page aligned, zeroed and exclusively owned until
// `dma_dealloc`; physical == virtual under the identity map.
unsafe impl Hal for HelloHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc::alloc_zeroed(dma_layout(pages)) };
        match NonNull::new(ptr) {
            Some(p) => (p.as_ptr() as usize as PhysAddr, p),
            None => panic!("out of memory for {pages} DMA pages"),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: allocated by dma_alloc with the same layout.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), dma_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        match NonNull::new(paddr as usize as *mut u8) {
            Some(p) => p,
            None => panic!("MMIO at address 0"),
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
